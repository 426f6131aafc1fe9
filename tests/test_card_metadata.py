"""Card front matter valid against the hub's model-card spec: license "other" carries license_name and
license_link, a LoRA adapter's base_model comes from adapter_config.json, no local absolute paths under "Reproduce",
a slide encoder with metrics gets a model-index."""

import json
import os

import yaml
from slide_tiny import tiny_encoder

from reportkd.hub import DistillationInfo, get_model_kind
from reportkd.hub.cards import card_context, portable_command, render_card


def front_matter(card) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def mtcnn_folder(folder):
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification

    config = MtCNNConfig(
        vocab_size=20, embedding_dim=4, num_filters=2, kernel_sizes=[2], task_labels={"t": ["a", "b"]}
    )
    MtCNNForReportClassification(config).save_pretrained(folder)
    return folder


def test_license_other_has_name_and_link_and_no_absolute_paths(tmp_path):
    folder = mtcnn_folder(tmp_path / "m")
    secret = f"{tmp_path}/private/reports.jsonl"
    DistillationInfo(method=None, command=f"reportkd demo --data {secret} --output-dir={tmp_path}/out").save(folder)
    card = render_card(folder, "org/m", kind="mtcnn")
    meta = front_matter(card)
    assert meta["license"] == "other" and meta["license_name"] and meta["license_link"]
    assert str(tmp_path) not in str(card) and "private/reports.jsonl" in str(card)
    explicit = front_matter(render_card(folder, "org/m", kind="mtcnn", license="apache-2.0"))
    assert "license_name" not in explicit and explicit["license"] == "apache-2.0"


def test_portable_command_keeps_relative_paths_and_flags():
    here = os.getcwd()
    cmd = f"python recipes/x.py --config {here}/cfg.yaml --seed 3 --out=/home/alice/runs/model"
    assert portable_command(cmd) == "python recipes/x.py --config cfg.yaml --seed 3 --out=.../runs/model"
    assert portable_command(None) is None


def test_lora_card_context_reads_base_model_from_the_adapter_config(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "org/base"})
    )
    ctx = card_context(folder, "org/lora", get_model_kind("causal_lm", folder))
    assert ctx["base_model"] == "org/base" and ctx["hub_base_model"] == "org/base"


def test_slide_encoder_card_has_a_model_index(tmp_path):
    tiny_encoder().save_pretrained(tmp_path)
    (tmp_path / "eval_results.json").write_text(json.dumps({"linear": {"balanced_accuracy": 0.8}, "num_slides": 10}))
    meta = front_matter(render_card(tmp_path, "org/slide", kind="slide_encoder"))
    results = meta["model-index"][0]["results"]
    names = {m["name"] for r in results for m in r["metrics"]}
    assert names == {"linear/balanced_accuracy"}  # num_* counts are not metrics
