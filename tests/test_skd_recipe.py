"""The report-generation recipe end to end on tiny models, and its YAML/flag parser."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
REAL_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"

from _parser import RecipeParser  # noqa: E402
from skd_report_generation import clean_report, main, make_parser, parse_mode  # noqa: E402

TEACHER = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
STUDENT = {**TEACHER, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1}
TINY = {
    "teacher_config": json.dumps(TEACHER), "student_config": json.dumps(STUDENT), "tokenizer_vocab_size": 300,
    "teacher_steps": 2, "student_warmup_steps": 1, "max_steps": 2, "per_device_train_batch_size": 4,
    "max_prompt_length": 48, "max_completion_length": 12, "max_train_samples": 64, "max_eval_samples": 6,
    "eval_batch_size": 6, "prompt_words": 40, "logging_steps": 1, "report_to": "none", "disable_tqdm": "true",
    "num_threads": 1, "top_k": 5, "use_cpu": "true",
}  # fmt: skip
TINY_FLAGS = [item for key, value in TINY.items() for item in (f"--{key}", str(value))]


def run(tmp_path, data, modes):
    args = make_parser().parse_args_and_config(
        ["--config", str(ROOT / "recipes" / "configs" / "skd_report_cpu.yaml"), "--data_path", str(data),
         "--output_dir", str(tmp_path / "run"), "--modes", *modes, *TINY_FLAGS]
    )  # fmt: skip
    return main(*args)


def test_recipe_runs_end_to_end_on_synthetic_reports(tmp_path, capsys):
    from reportkd.synthetic import generate_reports, write_reports

    data = write_reports(tmp_path / "reports.jsonl.gz", generate_reports(40, seed=0))
    results = run(tmp_path, data, ["sft", "skd", "skd@top_k=1"])
    assert set(results) == {"teacher", "student_init", "sft", "skd", "skd@top_k=1"}
    for metrics in results.values():
        assert 0.0 <= metrics["field_accuracy"] <= 1.0 and "accuracy_histology" in metrics and "rougeL" in metrics
    assert "acceptance_rate_last" in results["skd"]
    assert (tmp_path / "run" / "results.json").exists() and (tmp_path / "run" / "skd_top_k_1").exists()
    assert "| skd@top_k=1 |" in capsys.readouterr().out
    # The saved generations re-score to the same numbers through `reportkd evaluate generations`.
    from reportkd.cli import main as cli

    predictions = tmp_path / "run" / "predictions" / "skd_top_k_1.jsonl"
    assert cli(["evaluate", "generations", "--predictions", str(predictions), "--out", str(tmp_path / "m.json")]) == 0
    rescored = json.loads((tmp_path / "m.json").read_text())
    for key in ("field_accuracy", "rougeL", "bleu", "accuracy_organ"):
        assert rescored[key] == pytest.approx(results["skd@top_k=1"][key])


@pytest.mark.shared_data
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"TCGA reports not found at {REAL_DATA} (needs ../shared/data)")
def test_recipe_runs_on_the_tcga_reports(tmp_path):
    results = run(tmp_path, REAL_DATA, ["skd"])
    assert results["skd"]["field_accuracy"] >= 0.0


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
