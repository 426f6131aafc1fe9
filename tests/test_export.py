"""``reportkd export --format onnx`` and ``reportkd predict --backend onnx``: parity with PyTorch (max |Δp| < 1e-4)
on synthetic and real TCGA reports, dynamic batch and length, stale exports refused."""

import json
import shutil

import numpy as np
import pytest
import torch
from report_tiny import calibrated_student

from reportkd.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    student = calibrated_student(tmp_path_factory.mktemp("export"))
    assert main(["export", "--model", str(student["model"]), "--format", "onnx"]) == 0
    return student


def test_onnx_predict_equals_torch_predict(exported, tmp_path, capsys):
    model, data = str(exported["model"]), str(exported["test"])
    outs = {}
    for backend in ("torch", "onnx"):
        outs[backend] = tmp_path / f"{backend}.jsonl"
        args = ["predict", "--model", model, "--data", data, "--out", str(outs[backend]), "--backend", backend]
        assert main([*args, "--save-probs", str(tmp_path / f"{backend}.npz")]) == 0
    rows = {b: [json.loads(line) for line in p.read_text().splitlines()] for b, p in outs.items()}
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["id"] == b["id"] and a["auto_coded"] == b["auto_coded"]
        assert {t: v["label"] for t, v in a["tasks"].items()} == {t: v["label"] for t, v in b["tasks"].items()}
    probs = {b: np.load(tmp_path / f"{b}.npz") for b in outs}
    prob_keys = [k for k in probs["torch"].files if k.startswith("prob")]
    assert prob_keys
    for key in prob_keys:
        assert np.abs(probs["torch"][key] - probs["onnx"][key]).max() < 1e-4


def test_dynamic_batch_and_length_and_padding(exported):
    from transformers import AutoModel

    from reportkd.text.mtcnn.export import OnnxClassifier

    model = AutoModel.from_pretrained(exported["model"]).eval()
    onnx_model = OnnxClassifier(exported["model"] / "model.onnx", threads=1)
    assert onnx_model.tasks == model.config.task_names
    g = torch.Generator().manual_seed(1)
    for batch, length in ((1, 1), (1, 2), (5, 3), (16, 90), (3, 400)):  # shorter than a kernel, longer than trained
        ids = torch.randint(2, model.config.vocab_size, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[-1, length // 2 + 1 :] = 0
        ids = ids.masked_fill(mask == 0, 0)
        want, got = model.predict_proba(ids, mask), onnx_model.predict_proba(ids.numpy(), mask.numpy())
        for task in want:
            np.testing.assert_allclose(got[task], want[task].numpy(), rtol=0, atol=1e-5)


def test_stale_export_and_missing_file_are_refused(exported, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(exported["model"], folder)
    args = ["predict", "--model", str(folder), "--data", str(exported["test"]), "--backend", "onnx"]
    (folder / "model.onnx").unlink()
    assert main([*args, "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "reportkd export" in capsys.readouterr().err
    shutil.copy(exported["model"] / "model.onnx", folder / "model.onnx")
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    assert main([*args, "--out", str(tmp_path / "b.jsonl"), "--allow-other-weights"]) == 2
    assert "other weights" in capsys.readouterr().err
    assert main(["export", "--model", str(folder)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--model", str(folder), "--overwrite"]) == 0  # re-export next to the new weights
    assert main([*args, "--out", str(tmp_path / "c.jsonl"), "--allow-other-weights"]) == 0


@pytest.mark.shared_data("tcga-reports/reports.jsonl.gz")
def test_parity_on_real_tcga_reports(shared_data_dir, tmp_path):
    from reportkd.data import read_records
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.export import OnnxClassifier, export_onnx

    records = read_records(shared_data_dir / "tcga-reports" / "reports.jsonl.gz")
    texts = [r["text"] for r in records if isinstance(r.get("text"), str) and r["text"].split()][:160]
    tok = train_word_tokenizer(texts, min_count=2, max_length=512)
    torch.manual_seed(0)
    config = MtCNNConfig(
        vocab_size=len(tok), embedding_dim=32, num_filters=32, kernel_sizes=[3, 4, 5], max_length=512,
        task_labels={"organ": ["breast", "kidney", "lung", "other"], "behavior": ["benign", "malignant"]},
    )  # fmt: skip
    model = MtCNNForReportClassification(config).eval()
    with torch.no_grad():  # peaked, not near-uniform, probabilities
        for head in model.classifiers.values():
            head.weight.mul_(20)
    onnx_model = OnnxClassifier(export_onnx(model, tmp_path / "model.onnx"), threads=1)
    worst = 0.0
    for start in range(0, len(texts), 32):
        enc = tok(texts[start : start + 32], truncation=True, padding=True, return_tensors="pt")
        want = model.predict_proba(enc["input_ids"], enc["attention_mask"])
        got = onnx_model.predict_proba(enc["input_ids"].numpy(), enc["attention_mask"].numpy())
        worst = max(worst, max(float(np.abs(got[t] - want[t].numpy()).max()) for t in want))
        assert max(float(want[t].max()) for t in want) > 0.9
    assert worst < 1e-4
