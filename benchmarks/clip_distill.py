"""Benchmark: CLIP distillation on the synthetic H&E image-caption set, teacher vs student alone vs distilled.

1. A teacher open_clip config (``reportkd-clip-teacher``) is trained from scratch with the contrastive loss.
2. A student config with several times fewer FLOPs (``reportkd-clip-student``) is trained alone with the
   contrastive loss, and (3) the same initialisation is distilled from the teacher, for the same steps.
4. All three are evaluated on a held-out synthetic split: retrieval R@1/5/10 (captions with the same attributes
   count as matches), zero-shot accuracy (prompt templates x class synonyms), linear probe; plus images/s of the
   image tower, parameters and FLOPs.

Writes ``benchmarks/results/clip_distill.json`` and prints a Markdown table. Runs in about 11 minutes on two
busy CPU cores with the defaults::

    python benchmarks/clip_distill.py
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

from reportkd.vlm.clip.data import CLIPCollator
from reportkd.vlm.clip.models import count_flops, count_parameters, load_open_clip, save_open_clip
from reportkd.vlm.clip.trainer import CLIPDistillationConfig, CLIPDistillationTrainer
from reportkd.vlm.evaluation import evaluate_clip
from reportkd.vlm.synthetic_tiles import SyntheticHistology

LOSS_MIX = {"contrastive_weight": 1.0, "logit_kd_weight": 1.0, "fd_weight": 2000.0, "icl_weight": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="reportkd-clip-teacher", help="Teacher open_clip config / name.")
    p.add_argument("--student", default="reportkd-clip-student", help="Student open_clip config / name.")
    p.add_argument("--train-size", type=int, default=3000, help="Synthetic training pairs.")
    p.add_argument("--eval-size", type=int, default=600, help="Synthetic evaluation pairs (another seed).")
    p.add_argument("--image-size", type=int, default=64, help="Rendered tile size.")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--teacher-steps", type=int, default=500)
    p.add_argument("--teacher-dir", default=None, help="Reuse a teacher saved by an earlier run (skips its training).")
    p.add_argument("--student-steps", type=int, default=400)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--student-lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=1.0, help="Logit-KD temperature.")
    p.add_argument("--loss-mix", type=json.loads, default=LOSS_MIX, help="JSON of CLIPDistillationConfig weights.")
    p.add_argument("--skip-alone", action="store_true", help="Skip the student trained alone (loss-mix sweeps).")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared, busy cores).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="runs/clip_distill_benchmark")
    p.add_argument("--json", default="benchmarks/results/clip_distill.json")
    return p.parse_args(argv)


def train(student, teacher, dataset, collator, *, steps: int, lr: float, batch_size: int, out: str, seed: int,
          weights: dict[str, float], temperature: float = 1.0) -> tuple[Any, float]:  # fmt: skip
    args = CLIPDistillationConfig(
        output_dir=out, report_to="none", per_device_train_batch_size=batch_size, max_steps=steps,
        learning_rate=lr, weight_decay=0.1, warmup_steps=max(steps // 10, 1), lr_scheduler_type="cosine",
        logging_steps=max(steps // 10, 1), save_strategy="no", seed=seed, data_seed=seed, use_cpu=True,
        dataloader_drop_last=True, dataloader_num_workers=0, disable_tqdm=False, temperature=temperature,
        **{"logit_kd_weight": 0.0, **weights},
    )  # fmt: skip
    trainer = CLIPDistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset,
                                      data_collator=collator)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


@torch.no_grad()
def images_per_second(models: dict[str, Any], image_size: int, batch_size: int = 64, rounds: int = 7) -> dict:
    """Image-tower throughput (eval mode, no gradients) of each model: the best of ``rounds`` batches, measured
    round-robin so that load from other processes hits every model alike."""
    x = torch.randn(batch_size, 3, image_size, image_size)
    best = dict.fromkeys(models, float("inf"))
    for model in models.values():
        model.eval()
        model.encode_image(x)  # warm-up
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.encode_image(x)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(batch_size / seconds, 1) for name, seconds in best.items()}


def describe(bundle, metrics: dict[str, float], speed: float, train_seconds: float, steps: int | None) -> dict:
    return {
        "config": bundle.name,
        "params": count_parameters(bundle.model),
        "flops_per_pair": count_flops(bundle.model),
        "images_per_s": speed,
        "train_steps": steps,
        "train_seconds": round(train_seconds, 1),
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
    }


def markdown_table(results: dict[str, dict]) -> str:
    rows = [
        "| model | R@1 i→t | R@1 t→i | R@5 i→t | R@10 i→t | zero-shot acc | linear probe | params (visual / text) "
        "| MFLOPs / pair | images/s | train steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m, p = r["metrics"], r["params"]
        rows.append(
            f"| {name} | {m['i2t_R@1']:.3f} | {m['t2i_R@1']:.3f} | {m['i2t_R@5']:.3f} | {m['i2t_R@10']:.3f} | "
            f"{m.get('zero_shot_acc', float('nan')):.3f} | {m.get('linear_probe_acc', float('nan')):.3f} | "
            f"{p['total'] / 1e6:.2f}M ({p['visual'] / 1e6:.2f}M / {p['text'] / 1e6:.2f}M) | "
            f"{r['flops_per_pair']['total'] / 1e6:.1f} | {r['images_per_s']:.0f} | {r['train_steps'] or 'reused'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.ERROR)
    out = Path(args.output_dir)
    t0 = time.perf_counter()
    train_set = SyntheticHistology(args.train_size, image_size=args.image_size, seed=args.seed)
    eval_set = SyntheticHistology(args.eval_size, image_size=args.image_size, seed=args.seed + 1000)
    from tqdm.auto import tqdm

    for ds, name in ((train_set, "render train"), (eval_set, "render eval")):
        for i in tqdm(range(len(ds)), desc=name):
            ds[i]

    torch.manual_seed(args.seed)
    teacher_seconds = float("nan")
    if args.teacher_dir:
        teacher = load_open_clip(args.teacher_dir)
    else:
        teacher = load_open_clip(args.teacher)
        _, teacher_seconds = train(
            teacher.model, None, train_set, CLIPCollator.for_models(teacher), steps=args.teacher_steps,
            lr=args.teacher_lr, batch_size=args.batch_size, out=str(out / "teacher"), seed=args.seed,
            weights={"contrastive_weight": 1.0},
        )  # fmt: skip
        save_open_clip(teacher.model, out / "teacher" / "model", model_cfg=teacher.model_cfg)
    teacher.model.eval()

    torch.manual_seed(args.seed + 1)
    alone = load_open_clip(args.student)
    distilled = load_open_clip(args.student)
    distilled.model.load_state_dict(alone.model.state_dict())  # same initialisation for both students
    alone_seconds = float("nan")
    if not args.skip_alone:
        _, alone_seconds = train(
            alone.model, None, train_set, CLIPCollator.for_models(alone), steps=args.student_steps,
            lr=args.student_lr, batch_size=args.batch_size, out=str(out / "student_alone"), seed=args.seed,
            weights={"contrastive_weight": 1.0},
        )  # fmt: skip
    _, distilled_seconds = train(
        distilled.model, teacher.model, train_set, CLIPCollator.for_models(distilled, teacher),
        steps=args.student_steps, lr=args.student_lr, batch_size=args.batch_size, out=str(out / "student_distilled"),
        seed=args.seed, weights=args.loss_mix, temperature=args.temperature,
    )  # fmt: skip

    runs = {
        "teacher": (teacher, teacher_seconds, None if args.teacher_dir else args.teacher_steps),
        "student alone": (alone, alone_seconds, args.student_steps),
        "student distilled": (distilled, distilled_seconds, args.student_steps),
    }
    speed = images_per_second({name: run[0].model for name, run in runs.items()}, args.image_size)
    results = {}
    for name, (bundle, seconds, steps) in runs.items():
        metrics = evaluate_clip(bundle, eval_set, batch_size=128)
        results[name] = describe(bundle, metrics, speed[name], seconds, steps)
    t_r1 = results["teacher"]["metrics"]["mean_R@1"]
    summary = {
        "distilled_over_teacher_mean_R@1": round(results["student distilled"]["metrics"]["mean_R@1"] / t_r1, 3),
        "alone_over_teacher_mean_R@1": round(results["student alone"]["metrics"]["mean_R@1"] / t_r1, 3),
        "teacher_over_student_flops": round(
            results["teacher"]["flops_per_pair"]["total"] / results["student distilled"]["flops_per_pair"]["total"], 2
        ),  # fmt: skip
        "student_over_teacher_images_per_s": round(
            results["student distilled"]["images_per_s"] / results["teacher"]["images_per_s"], 2
        ),
    }
    report = {
        "command": "python benchmarks/clip_distill.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args),
        "loss_mix": args.loss_mix,
        "data": f"synthetic H&E tiles {args.image_size}px: {args.train_size} train (seed {args.seed}), "
        f"{args.eval_size} eval (seed {args.seed + 1000})",
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
        "results": results,
        "summary": summary,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown_table(results))
    print(json.dumps(summary, indent=2))
    print(f"total {report['total_seconds']} s; JSON: {args.json}")
    return report


if __name__ == "__main__":
    main()
