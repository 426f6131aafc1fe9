"""Reports per second of ``reportkd predict`` end to end (read, tokenize, predict, write) on the TCGA reports:
PyTorch vs onnxruntime (``--backend onnx`` on ``reportkd export --format onnx``), several batch sizes.

The model is the ``reportkd demo`` student's architecture (embedding 64, 3×64 filters of widths 3/4/5, 512 tokens,
word tokenizer trained on the reports, organ and cancer_type heads); its weights are random, which does not change
the cost. Pass ``--model DIR`` to time a trained student instead. Each configuration runs ``reportkd predict``
in-process after one warm-up run (imports and library start-up are not counted), ``--repeats`` times; the table gives
the best wall time and the CPU time of that run. A separate line times the tokenizer alone on the same texts, the
floor of any backend. Differences from the anchor (``--backend torch``, the default): only the backend and batch size.

    nice -n 10 python benchmarks/predict_speed.py --threads 2                  # ~5 min on 2 idle cores
    python benchmarks/predict_speed.py --limit 1000 --batch-sizes 128          # quick

Writes ``benchmarks/results/predict_speed.{json,md,png}`` (``--overwrite`` to replace); prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
RESULTS = ROOT / "benchmarks" / "results"


def build_student(data: Path, out: Path) -> Path:
    """A demo-sized MtCNN with a tokenizer trained on ``data`` (random weights: speed only)."""
    import torch

    from reportkd.data import build_label_maps, read_records
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.pipeline import save_classifier

    records = read_records(data)
    texts = [r["text"] for r in records if isinstance(r.get("text"), str) and r["text"].split()]
    tok = train_word_tokenizer(texts, min_count=2, max_length=512)
    tasks = ["organ", "cancer_type"]
    labels = build_label_maps({t: [r.get(t) for r in records] for t in tasks}, tasks, min_class_count=5)
    torch.manual_seed(0)
    config = MtCNNConfig(
        vocab_size=len(tok), embedding_dim=64, num_filters=64, kernel_sizes=[3, 4, 5], max_length=512,
        pad_token_id=tok.pad_token_id, task_labels=labels,
    )  # fmt: skip
    return save_classifier(MtCNNForReportClassification(config).eval(), tok, out)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Reports file (default: the TCGA reports).")
    p.add_argument("--model", type=Path, help="A saved student (default: a demo-sized one with random weights).")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128, 512])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch and onnxruntime).")
    p.add_argument("--repeats", type=int, default=2, help="Runs per configuration (the best is kept).")
    p.add_argument("--limit", type=int, help="Use only the first N reports.")
    p.add_argument("--overwrite", action="store_true", help="Replace existing results.")
    p.add_argument("--render", action="store_true", help="Only redraw the table and plot from the saved JSON.")
    args = p.parse_args(argv)
    if args.render:
        write_results(json.loads((RESULTS / "predict_speed.json").read_text()))
        return 0
    out_json = RESULTS / "predict_speed.json"
    if out_json.exists() and not args.overwrite and args.limit is None:
        sys.exit(f"{out_json} exists; pass --overwrite to replace it.")

    import torch

    torch.set_num_threads(args.threads)
    from reportkd.cli import main as cli
    from reportkd.data import read_records

    work = Path(tempfile.mkdtemp(prefix="predict_speed_"))
    data = args.data
    records = read_records(data)
    if args.limit:
        data = work / "reports.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records[: args.limit]))
        records = records[: args.limit]
    model = args.model or build_student(args.data, work / "student")
    if "onnx" in args.backends and not (model / "model.onnx").is_file():
        assert cli(["export", "--model", str(model), "--out", str(work / "model.onnx")]) == 0
    onnx_file = model / "model.onnx" if (model / "model.onnx").is_file() else work / "model.onnx"

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    texts = [r["text"] for r in records if isinstance(r.get("text"), str) and r["text"].split()]
    tok(texts[:64], truncation=True, max_length=512)
    tok_wall, tok_cpu = min(timed(lambda: tok(texts, truncation=True, max_length=512)) for _ in range(args.repeats))
    rows = [{"backend": "tokenizer only", "batch_size": None, "wall_s": tok_wall, "cpu_s": tok_cpu,
             "reports_per_s": len(texts) / tok_wall}]  # fmt: skip
    print(f"tokenizer only: {len(texts) / tok_wall:.0f} reports/s", file=sys.stderr)
    for backend in args.backends:
        for bs in args.batch_sizes:
            argv_ = ["predict", "--model", str(model), "--data", str(data), "--out", str(work / "pred.jsonl"),
                     "--overwrite", "--backend", backend, "--batch-size", str(bs),
                     "--threads", str(args.threads)]  # fmt: skip
            if backend == "onnx":
                argv_ += ["--onnx", str(onnx_file)]
            runs = []
            for _ in range(args.repeats + (1 if not rows[1:] else 0)):  # one warm-up before the first configuration
                runs.append(timed(lambda a=argv_: cli(a)))
            wall, cpu = min(runs[-args.repeats :])
            rows.append({"backend": backend, "batch_size": bs, "wall_s": wall, "cpu_s": cpu,
                         "reports_per_s": len(records) / wall})  # fmt: skip
            print(f"{backend} batch {bs}: {len(records) / wall:.0f} reports/s", file=sys.stderr)
    result = {
        "data": str(args.data.name), "reports": len(records), "non_empty": len(texts), "threads": args.threads,
        "model": str(args.model) if args.model else "demo-sized MtCNN (64/3x64/512), random weights",
        "torch": torch.__version__, "rows": rows,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.limit is None:
        write_results(result)
    return 0


def write_results(result: dict) -> None:
    """JSON, a Markdown table and a bar chart under ``benchmarks/results``."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reportkd.utils import atomic_path

    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS / "predict_speed.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| backend | batch size | reports/s (wall) | reports per CPU-second | wall s | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        n = result["non_empty"] if r["batch_size"] is None else result["reports"]
        r["reports_per_cpu_s"] = n / r["cpu_s"]
        lines.append(f"| {r['backend']} | {r['batch_size'] or '—'} | {r['reports_per_s']:.0f} | "
                     f"{r['reports_per_cpu_s']:.0f} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")  # fmt: skip
    with atomic_path(RESULTS / "predict_speed.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(RESULTS / "predict_speed.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    labels = [f"{r['backend']}\n{r['batch_size'] or ''}" for r in result["rows"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.5))
    ax.bar(x - 0.2, [r["reports_per_s"] for r in result["rows"]], 0.4, label="reports / s (wall)")
    ax.bar(x + 0.2, [r["reports_per_cpu_s"] for r in result["rows"]], 0.4, label="reports per CPU-second")
    ax.set_xticks(x, labels)
    ax.axhline(1000, color="gray", ls="--", lw=1, label="goal: 1,000 reports/s")
    ax.set_ylabel("reports (end to end)")
    ax.set_title(f"reportkd predict, {result['reports']} TCGA reports, {result['threads']} threads")
    ax.legend()
    fig.tight_layout()
    with atomic_path(RESULTS / "predict_speed.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
