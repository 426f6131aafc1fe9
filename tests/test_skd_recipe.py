"""The report-generation recipe (one student) and the SKD ablation benchmark (several) end to end on tiny models."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reportkd.recipes import RecipeParser
from reportkd.text.skd.recipe import make_parser, parse_mode, run
from reportkd.text.skd.report_task import clean_report, generate, load_split

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"

TEACHER = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
STUDENT = {**TEACHER, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}
TINY = {
    "teacher_config": json.dumps(TEACHER), "student_config": json.dumps(STUDENT), "tokenizer_vocab_size": 300,
    "teacher_steps": 2, "student_warmup_steps": 1, "max_steps": 2, "per_device_train_batch_size": 4,
    "max_prompt_length": 48, "max_completion_length": 12, "max_train_samples": 64, "max_eval_samples": 6,
    "eval_batch_size": 6, "prompt_words": 40, "logging_steps": 1, "report_to": "none", "disable_tqdm": "true",
    "num_threads": 1, "use_cpu": "true",
}  # fmt: skip
TINY_FLAGS = [item for key, value in TINY.items() for item in (f"--{key}", str(value))]


def recipe_args(tmp_path: Path, data, *extra: str) -> list[str]:
    config = tmp_path / "recipe.yaml"  # the CPU config with a YAML value the trainer must receive
    config.write_text((ROOT / "recipes" / "configs" / "skd_report_cpu.yaml").read_text() + "\ntop_k: 7\n")
    return ["--config", str(config), "--data_path", str(data), "--output_dir", str(tmp_path / "run"), *TINY_FLAGS,
            *extra]  # fmt: skip


def test_recipe_trains_one_student_that_reloads_and_reproduces_its_generations(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reportkd.synthetic import generate_reports, write_reports

    data = write_reports(tmp_path / "reports.jsonl.gz", generate_reports(40, seed=0))
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        recipe_args(tmp_path, data, "--mode", "skd", "--learning_rate", "5e-3")
    )
    results = run(script_args, training_args, model_args)
    out = tmp_path / "run"
    assert list(results) == ["teacher", "student_init", "skd"]  # one student per run
    assert json.loads((out / "results.json").read_text()).keys() == results.keys()
    assert "acceptance_rate_last" in results["skd"] and "| skd |" in capsys.readouterr().out
    # the YAML value and the flag reached the trainer (its provenance records the arguments it ran with)
    hp = json.loads((out / "skd" / "distillation.json").read_text())["hyperparameters"]
    assert (hp["mode"], hp["top_k"], hp["learning_rate"]) == ("skd", 7, 5e-3)
    # the student trained: its weights moved away from the shared warm start
    init, student = load_file(str(out / "student_init" / "model.safetensors")), load_file(
        str(out / "skd" / "model.safetensors"))  # fmt: skip
    assert any(not torch.equal(init[k], student[k]) for k in init)
    # the saved student reloads and reproduces the generations the recipe scored
    model = AutoModelForCausalLM.from_pretrained(out / "skd")
    tok = AutoTokenizer.from_pretrained(out / "skd")
    _, held_out = load_split(script_args)
    again = generate(model, tok, [ex["prompt"] for ex in held_out], 48, 12, batch_size=6)
    saved = [json.loads(line)["prediction"] for line in (out / "predictions" / "skd.jsonl").read_text().splitlines()]
    assert again == saved and len(saved) == len(held_out)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("skd_ablation", ROOT / "benchmarks" / "skd_ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_ablation_benchmark_trains_every_mode_from_one_warm_start(tmp_path, capsys, monkeypatch):
    from reportkd.synthetic import generate_reports, write_reports

    benchmark = load_benchmark()
    data = write_reports(tmp_path / "reports.jsonl.gz", generate_reports(40, seed=0))
    results = benchmark.main(recipe_args(tmp_path, data, "--modes", "sft", "skd@top_k=1"))
    out = tmp_path / "run"
    assert list(results) == ["teacher", "student_init", "sft", "skd@top_k=1"]
    assert "| skd@top_k=1 |" in capsys.readouterr().out
    sft, skd = (load_file(str(out / d / "model.safetensors")) for d in ("sft", "skd_top_k_1"))
    assert any(not torch.equal(sft[k], skd[k]) for k in sft)  # different data sources, different students
    hp = json.loads((out / "skd_top_k_1" / "distillation.json").read_text())["hyperparameters"]
    assert hp["top_k"] == 1  # the mode's override beat the YAML's 7
    # The saved generations re-score to the same numbers through `reportkd evaluate generations`.
    from reportkd.cli import main as cli

    predictions = out / "predictions" / "skd_top_k_1.jsonl"
    assert cli(["evaluate", "generations", "--predictions", str(predictions), "--out", str(tmp_path / "m.json")]) == 0
    rescored = json.loads((tmp_path / "m.json").read_text())
    for key in ("field_accuracy", "rougeL", "bleu", "accuracy_organ"):
        assert rescored[key] == pytest.approx(results["skd@top_k=1"][key])
    with pytest.raises(ValueError, match="Unknown mode"):
        benchmark.main(recipe_args(tmp_path, data, "--modes", "sft", "skdd"))


@pytest.mark.shared_data
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"TCGA reports not found at {REAL_DATA} (needs ../shared/data)")
def test_recipe_runs_on_the_tcga_reports(tmp_path):
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        recipe_args(tmp_path, REAL_DATA, "--mode", "sft")
    )
    train, held_out = load_split(script_args)
    results = run(script_args, training_args, model_args)
    assert {"teacher", "student_init", "sft"} == set(results)
    lines = (tmp_path / "run" / "predictions" / "sft.jsonl").read_text().splitlines()
    assert [json.loads(line)["reference"] for line in lines] == [ex["completion"].strip() for ex in held_out]
    assert all(0.0 <= results["sft"][f"accuracy_{f}"] <= 1.0 for f in ("organ", "histology", "grade"))
    assert 0 < len(held_out) <= 6 and len(train) == 64  # the caps of TINY


def test_parser_yaml_then_flags(tmp_path):
    from reportkd.text.skd import SKDConfig

    config = tmp_path / "c.yaml"
    config.write_text("output_dir: x\nmode: on_policy\ntop_k: 5\nlearning_rate: 1.0e-4\n")
    parser = RecipeParser((SKDConfig,))
    (args,) = parser.parse_args_and_config(["--config", str(config), "--top_k", "7"])
    assert (args.output_dir, args.mode, args.top_k, args.learning_rate) == ("x", "on_policy", 7, 1e-4)
    config.write_text("output_dir: x\ntop_kk: 5\n")
    with pytest.raises(ValueError, match="unknown keys \\['top_kk'\\]"):
        parser.parse_args_and_config(["--config", str(config)])


def test_mode_overrides_and_report_cleaning():
    assert parse_mode("skd@top_k=5,seed=1") == ("skd", {"top_k": 5, "seed": 1})
    with pytest.raises(ValueError, match="Unknown mode"):
        parse_mode("skdd")
    with pytest.raises(ValueError, match="Bad override"):
        parse_mode("skd@topk=5")
    text = "UUID:123-ABC\nIIIl1I IIII11 lIII\nDIAGNOSIS: Renal cell carcinoma, clear cell type.\nGross: tan.\n"
    cleaned = clean_report(text, max_words=6)
    assert cleaned == "diagnosis: renal cell carcinoma, clear cell type."
