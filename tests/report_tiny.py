"""A tiny calibrated MtCNN student folder (model, tokenizer, thresholds.json) and reports files, for the pipeline,
export and remote-code tests."""

import json
from pathlib import Path

TASKS = ("organ", "behavior", "laterality")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_classifier(out_dir: Path, train: list[dict], task_labels: dict, *, steps: int = 40, seed: int = 0) -> Path:
    """A tiny MtCNN trained a few steps (so its probabilities mean something), saved by save_classifier."""
    import torch

    from reportkd.data import ReportCollator, encode_reports, load_reports
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.pipeline import save_classifier

    torch.manual_seed(seed)
    ds, _ = load_reports(train, task_columns=list(task_labels))
    tok = train_word_tokenizer(ds["text"], min_count=1, max_length=96)
    config = MtCNNConfig(
        vocab_size=len(tok), embedding_dim=16, num_filters=8, kernel_sizes=[2, 3], dropout=0.0, max_length=96,
        pad_token_id=tok.pad_token_id, task_labels=task_labels,
    )  # fmt: skip
    model = MtCNNForReportClassification(config)
    enc = encode_reports(ds, tok, task_labels, max_length=96)
    batch = ReportCollator(pad_token_id=tok.pad_token_id, min_length=3)(enc.to_list())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    return save_classifier(model.eval(), tok, out_dir, None)


def calibrated_student(root: Path, *, steps: int = 40, seed: int = 0) -> dict:
    """Trains a tiny MtCNN a few steps on synthetic reports, saves it and calibrates thresholds with the CLI.

    Returns:
        ``{"model": DIR, "test": FILE (unlabelled, with an empty report), "texts": [...], "labels": task_labels}``.
    """
    from reportkd.cli import main
    from reportkd.data import build_label_maps
    from reportkd.synthetic import generate_reports

    records = [{k: r[k] for k in ("id", "text", *TASKS)} for r in generate_reports(200, seed=3)]
    train, cal, test = records[:100], records[100:170], records[170:]
    labels = build_label_maps({t: [r[t] for r in train] for t in TASKS}, TASKS, min_class_count=1)
    model_dir = build_classifier(root / "model", train, labels, steps=steps, seed=seed)
    cal_file = write_jsonl(root / "cal.jsonl", cal)
    rc = main(["calibrate", "--model", str(model_dir), "--data", str(cal_file), "--target-accuracy", "0.8",
               "--method", "empirical", "--out", str(model_dir / "thresholds.json")])  # fmt: skip
    assert rc == 0
    unlabelled = [{"id": r["id"], "text": r["text"]} for r in test] + [{"id": "empty", "text": " "}]
    return {
        "model": model_dir,
        "test": write_jsonl(root / "test.jsonl", unlabelled),
        "texts": [r["text"] for r in unlabelled],
        "labels": labels,
    }
