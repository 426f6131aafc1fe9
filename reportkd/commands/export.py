"""``reportkd export``: export a saved MtCNN student for deployment without PyTorch.

    reportkd export --model reportkd-demo/student --format onnx      # → reportkd-demo/student/model.onnx
    reportkd predict --model reportkd-demo/student --backend onnx --data reports.jsonl --out predictions.jsonl

The ONNX graph has dynamic batch and length, takes ``input_ids`` / ``attention_mask`` and returns one probability
tensor per task; it records the label maps and the weights fingerprint, so ``predict --backend onnx`` refuses an
export of other weights. After writing, the export is checked against the PyTorch model on random reports of
several lengths (max |Δp| printed; above 1e-4 is an error). Needs ``pip install 'reportkd[export]'``.
"""

from __future__ import annotations

import argparse

from ._classifier import add_model_arguments, add_overwrite_argument, check_outputs, load_classifier, model_options

FORMATS = ("onnx",)
TOLERANCE = 1e-4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Classifier directory (a saved MtCNN student).")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="Export format.")
    p.add_argument("--out", help="Output file (default: MODEL_DIR/model.onnx).")
    add_overwrite_argument(p)
    add_model_arguments(p)


def parity(model, onnx_model, *, seed: int = 0) -> float:
    """Max |Δp| between the PyTorch model and its export on random padded batches of several lengths.

    Args:
        model: The PyTorch MtCNN.
        onnx_model: Its :class:`~reportkd.text.mtcnn.export.OnnxClassifier`.
        seed: Random seed of the token ids.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, length in ((1, 1), (3, 7), (8, 64), (2, 300)):
        ids = torch.randint(2, model.config.vocab_size, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, max(1, length // 2) :] = 0  # one right-padded report
        ids = ids.masked_fill(mask == 0, model.config.pad_token_id)
        want = model.predict_proba(ids, mask)
        got = onnx_model.predict_proba(ids.numpy(), mask.numpy())
        worst = max(worst, max(float((torch.from_numpy(got[t]) - want[t]).abs().max()) for t in want))
    return worst


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reportkd.text.mtcnn.export import ONNX_NAME, OnnxClassifier, export_onnx

    out = Path(args.out) if args.out else Path(args.model) / ONNX_NAME
    if out.suffix != ".onnx":
        raise ValueError(f"--out {out}: use a file name ending in .onnx.")
    model_dir = Path(args.model)
    # the model folder's files are inputs, except a previous export (replaced with --overwrite)
    inputs = {f"--model ({p.name})": p for p in sorted(model_dir.glob("*")) if p.is_file() and p.suffix != ".onnx"}
    check_outputs({"--out": out}, inputs or {"--model": args.model}, overwrite=args.overwrite)
    clf = load_classifier(args.model, thresholds=None, **model_options(args))
    if not hasattr(clf.model.config, "kernel_sizes"):
        raise ValueError(f"{args.model} is not an MtCNN (model_type {clf.model.config.model_type!r}); export MtCNNs.")
    print(f"Exporting {args.model} to ONNX (dynamic batch and length) …")
    export_onnx(clf.model, out, model_sha256=clf.model_sha256)
    worst = parity(clf.model, OnnxClassifier(out, threads=1))
    if worst > TOLERANCE:
        out.unlink()
        raise RuntimeError(f"the ONNX export differs from the model by {worst:.2e} (> {TOLERANCE}); nothing written.")
    print(f"Wrote {out} ({out.stat().st_size / 2**20:.1f} MiB); max |Δp| vs PyTorch on random reports: {worst:.1e}")
    print(f"Use it: reportkd predict --model {args.model} --backend onnx --data REPORTS --out predictions.jsonl")
    return 0
