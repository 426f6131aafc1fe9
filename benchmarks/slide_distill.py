"""Benchmark: cross-magnification (XMAG) slide-encoder distillation on synthetic slides.

1. A teacher slide encoder reads the fine grid (20x-like) and is aligned with the slides' reports (CLIP InfoNCE).
2. A smaller student reads the coarse grid of the same slides (2x2 fine cells per coarse patch: 4x fewer patches):
   (a) trained alone with the same report alignment on the coarse grid, and (b) distilled from the teacher (feature
   + slide-slide / slide-report similarity + token KD with fine tokens pooled per coarse cell), same steps, same
   initialisation.
3. Everything is probed on held-out synthetic slides with the shared evaluation layer: linear probe (C chosen on
   validation), kNN and label retrieval, balanced accuracy with bootstrap confidence intervals; mean-pooled raw patch
   features of each grid are the reference. Forward speed (whole slides, no gradients) of teacher-on-fine and
   student-on-coarse is measured in the same run, round-robin, on larger slides (whole-slide scale grids).

Writes ``benchmarks/results/slide_distill.json`` and prints a Markdown table. About 2 minutes on two busy CPU cores
with the defaults::

    python benchmarks/slide_distill.py
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from reportkd.vlm.slide import SlideEncoderConfig, SlideEncoderModel
from reportkd.vlm.slide.alignment import SlideReportModel, load_text_encoder
from reportkd.vlm.slide.data import SlideCollator, pad_slides, synthetic_dataset
from reportkd.vlm.slide.evaluation import evaluate_slide_model
from reportkd.vlm.slide.synthetic import make_synthetic_slides
from reportkd.vlm.slide.trainer import (
    SlideAlignmentConfig,
    SlideAlignmentTrainer,
    SlideDistillationConfig,
    SlideDistillationTrainer,
)

TEXT = "open_clip:reportkd-clip-tiny-student"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-size", type=int, default=400, help="Synthetic training slides.")
    p.add_argument("--eval-size", type=int, default=400, help="Synthetic evaluation slides (another seed).")
    p.add_argument("--teacher-steps", type=int, default=400)
    p.add_argument("--student-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--teacher",
        type=json.loads,
        default={"hidden_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4},
        help="Teacher architecture JSON.",
    )
    p.add_argument(
        "--student",
        type=json.loads,
        default={"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4},
        help="Student architecture JSON.",
    )
    p.add_argument("--crop", type=int, default=6, help="Student crop side (coarse cells); the teacher gets 2x.")
    p.add_argument("--speed-side", type=int, default=48, help="Fine-grid side of the slides timed for speed.")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared, busy cores).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/slide_distill_benchmark")
    p.add_argument("--json", default="benchmarks/results/slide_distill.json")
    return p.parse_args(argv)


def encoder(arch: dict[str, Any], seed: int) -> SlideEncoderModel:
    torch.manual_seed(seed)
    return SlideEncoderModel(SlideEncoderConfig(input_dim=32, **arch))


def common_args(cls, out: str, steps: int, args: argparse.Namespace, **kw) -> Any:
    return cls(
        output_dir=out,
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=max(steps // 15, 1),
        lr_scheduler_type="cosine",
        logging_steps=max(steps // 10, 1),
        save_strategy="no",
        seed=args.seed,
        data_seed=args.seed,
        use_cpu=True,
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **kw,
    )


def align(slide_encoder: SlideEncoderModel, data, crop: int, steps: int, out: str, args) -> tuple[Any, float]:
    torch.manual_seed(args.seed + 7)
    model = SlideReportModel(slide_encoder, load_text_encoder(TEXT), embed_dim=64)
    trainer = SlideAlignmentTrainer(
        model=model,
        args=common_args(SlideAlignmentConfig, out, steps, args),
        train_dataset=data,
        data_collator=SlideCollator(tokenize=model.tokenize, crop_size=crop),
    )
    start = time.perf_counter()
    trainer.train()
    return model.eval(), time.perf_counter() - start


@torch.no_grad()
def slides_per_second(runs: dict[str, tuple[torch.nn.Module, list]], rounds: int = 5) -> dict[str, float]:
    """Whole-slide forward passes per second (eval mode, one slide per pass, best of ``rounds`` sweeps measured
    round-robin so that load from other processes hits every model alike)."""
    best = dict.fromkeys(runs, float("inf"))
    batches = {name: [pad_slides([s.features], [s.grid]) for s in slides] for name, (_, slides) in runs.items()}
    for name, (model, _) in runs.items():
        model.eval()(**batches[name][0])  # warm-up
    for _ in range(rounds):
        for name, (model, _) in runs.items():
            start = time.perf_counter()
            for batch in batches[name]:
                model(**batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(len(batches[name]) / seconds, 2) for name, seconds in best.items()}


def probe(model, source: str, grid: str, args) -> dict[str, Any]:
    metrics = evaluate_slide_model(
        model, source, grid=grid, probes=("linear", "knn", "retrieval"), n_bootstrap=args.bootstrap, seed=args.seed
    )
    keep = ("balanced_accuracy", "balanced_accuracy_ci", "macro_auroc", "macro_f1", "C")
    out = {f"{p}_{k}": metrics[p][k] for p in ("linear", "knn") for k in keep if k in metrics[p]}
    out.update({f"retrieval_{k}": metrics["retrieval"][k] for k in ("acc@1", "map@5", "mv_acc@5")})
    return out


def markdown_table(results: dict[str, dict]) -> str:
    rows = [
        "| model | grid | patches / slide | params | linear probe bal. acc [95% CI] | kNN bal. acc | "
        "retrieval mAP@5 | slides/s | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m = r["metrics"]
        ci = m.get("linear_balanced_accuracy_ci", [float("nan")] * 2)
        rows.append(
            f"| {name} | {r['grid']} | {r['patches_per_slide']:.0f} | {r.get('params', 0) / 1e3:.0f}K | "
            f"{m['linear_balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {m['knn_balanced_accuracy']:.3f} | "
            f"{m['retrieval_map@5']:.3f} | {r.get('slides_per_s', '–')} | {r.get('train_seconds', '–')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    t0, out = time.perf_counter(), Path(args.output_dir)
    train_spec, eval_spec = f"n={args.train_size},seed={args.seed}", f"n={args.eval_size},seed={args.seed + 1000}"
    fine, xmag = (
        synthetic_dataset(train_spec, grid="fine"),
        synthetic_dataset(train_spec, grid="coarse", teacher_grid="fine"),
    )
    coarse = synthetic_dataset(train_spec, grid="coarse")

    teacher, teacher_s = align(
        encoder(args.teacher, args.seed), fine, 2 * args.crop, args.teacher_steps, str(out / "teacher"), args
    )
    alone, alone_s = align(
        encoder(args.student, args.seed + 1), coarse, args.crop, args.student_steps, str(out / "alone"), args
    )
    dist_args = common_args(
        SlideDistillationConfig,
        str(out / "distilled"),
        args.student_steps,
        args,
        similarity_kind="both",
        token_weight=1.0,
        temperature=0.1,
    )
    trainer = SlideDistillationTrainer(
        model=encoder(args.student, args.seed + 1),
        teacher_model=teacher,
        args=dist_args,
        train_dataset=xmag,
        data_collator=SlideCollator(tokenize=teacher.tokenize, crop_size=args.crop),
    )
    start = time.perf_counter()
    trainer.train()
    distilled_s = time.perf_counter() - start
    distilled = trainer.model.student.eval()

    source = f"synthetic:{eval_spec}"
    ev_fine, ev_coarse = synthetic_dataset(eval_spec, grid="fine"), synthetic_dataset(eval_spec, grid="coarse")
    patches = {
        g: sum(len(d.slide_features(i).features) for i in range(len(d))) / len(d)
        for g, d in (("fine", ev_fine), ("coarse", ev_coarse))
    }
    speed_slides = make_synthetic_slides(8, seed=args.seed + 2000, min_side=args.speed_side, max_side=args.speed_side)
    speed = slides_per_second(
        {
            "teacher": (teacher.slide_encoder, [s.fine for s in speed_slides]),
            "student": (distilled, [s.coarse for s in speed_slides]),
        }
    )
    speed_patches = {
        g: sum(len(getattr(s, g).features) for s in speed_slides) / len(speed_slides) for g in ("fine", "coarse")
    }

    def params(m):
        return sum(p.numel() for p in m.parameters())

    results = {
        "mean-pooled features (fine)": {
            "grid": "fine",
            "patches_per_slide": patches["fine"],
            "metrics": probe(None, source, "fine", args),
        },
        "mean-pooled features (coarse)": {
            "grid": "coarse",
            "patches_per_slide": patches["coarse"],
            "metrics": probe(None, source, "coarse", args),
        },
        "teacher (aligned)": {
            "grid": "fine",
            "patches_per_slide": patches["fine"],
            "params": params(teacher.slide_encoder),
            "slides_per_s": speed["teacher"],
            "train_seconds": round(teacher_s, 1),
            "metrics": probe(teacher, source, "fine", args),
        },
        "student alone (aligned)": {
            "grid": "coarse",
            "patches_per_slide": patches["coarse"],
            "params": params(alone.slide_encoder),
            "slides_per_s": speed["student"],
            "train_seconds": round(alone_s, 1),
            "metrics": probe(alone, source, "coarse", args),
        },
        "student XMAG-distilled": {
            "grid": "coarse",
            "patches_per_slide": patches["coarse"],
            "params": params(distilled),
            "slides_per_s": speed["student"],
            "train_seconds": round(distilled_s, 1),
            "metrics": probe(distilled, source, "coarse", args),
        },
    }
    lp = {k: r["metrics"]["linear_balanced_accuracy"] for k, r in results.items()}
    summary = {
        "patches_ratio_fine_over_coarse": round(patches["fine"] / patches["coarse"], 2),
        "speed_slide_patches": {k: round(v) for k, v in speed_patches.items()},
        "forward_speed_ratio_student_over_teacher": round(speed["student"] / speed["teacher"], 2),
        "params_ratio_teacher_over_student": round(params(teacher.slide_encoder) / params(distilled), 2),
        "linear_probe_balanced_accuracy": {
            "teacher": lp["teacher (aligned)"],
            "student_distilled": lp["student XMAG-distilled"],
            "student_alone": lp["student alone (aligned)"],
        },
        "distilled_minus_teacher": round(lp["student XMAG-distilled"] - lp["teacher (aligned)"], 3),
        "distilled_minus_alone": round(lp["student XMAG-distilled"] - lp["student alone (aligned)"], 3),
    }
    report = {
        "command": "python benchmarks/slide_distill.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args),
        "data": f"synthetic slides (32-d patch features, 4 classes, sides 6-12, 2x2 coarse regions): "
        f"{args.train_size} train (seed {args.seed}), {args.eval_size} eval (seed {args.seed + 1000}; probes on a "
        f"stratified 60/20/20 split of it)",
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "results": results,
        "summary": summary,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown_table(results))
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
