"""Train an N-member MtCNN teacher vectorized vs member by member, with the same training code; print wall times.

Arms (same data, same steps, same `transformers.Trainer` setup or, with --no-trainer, the same plain loop):
  vectorized   one `MtCNNEnsembleForReportClassification` with N members;
  loop         N sequential runs of a 1-member `MtCNNForReportClassification` (what a user would script);
  loop_conv1d  the same loop with `conv_impl="conv1d"` (cuDNN/oneDNN convolution; the conventional MtCNN).
Tokenisation is done once, outside the timings, for every arm. Each arm's time includes building its model(s) and
Trainer(s). One JSON line per size goes to stdout (the last one is the demo's sizes); progress goes to stderr.
`*_s` are wall seconds and `*_cpu_s` process CPU seconds of a whole arm (best of --repeats alternated runs);
`*_step_ms` is the median step (per member for the loops), `step_ratio` the steady-state ratio without setup.
The machine this was written on is shared with other tenants: single runs vary several-fold, medians less.

    python benchmarks/ensemble_speed.py --members 16 --steps 30 --sizes small,paper,demo --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
import warnings

import torch
from transformers import TrainerCallback

from reportkd.text.mtcnn import (
    MtCNNConfig,
    MtCNNEnsembleConfig,
    MtCNNEnsembleForReportClassification,
    MtCNNForReportClassification,
    train_word_tokenizer,
)
from reportkd.text.mtcnn.modeling_mtcnn import member_chunk_size

# name -> (embedding_dim, num_filters, max_length, vocab_size, batch_size, step divisor)
SIZES = {
    "small": (32, 32, 128, 2000, 32, 1),
    "demo": (64, 64, 512, 5000, 32, 1),
    "paper": (300, 300, 1500, 20000, 32, 10),
}
ARMS = ("vectorized", "loop", "loop_conv1d")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_corpus(n: int, seed: int) -> tuple[list[str] | None, list[dict], dict[str, list[str]]]:
    """Synthetic reports and their label spaces, or (None, [], tasks) when `reportkd.synthetic` is unavailable."""
    try:
        from reportkd.synthetic import LABEL_SPACES, generate_reports
    except ImportError:
        return None, [], {"organ": [f"o{i}" for i in range(12)], "grade": ["G1", "G2", "G3", "G4", "unknown"]}
    records = generate_reports(n, seed=seed)
    return [r["text"] for r in records], records, {t: list(v) for t, v in LABEL_SPACES.items()}


def build_dataset(texts, records, tasks, vocab_size: int, max_length: int, n: int, seed: int):
    """Token ids + label ids per report; random ids of realistic lengths when there is no corpus."""
    config = MtCNNConfig(vocab_size=vocab_size, task_labels=tasks)
    if texts is None:
        rng = random.Random(seed)
        return [
            {
                "input_ids": [
                    rng.randrange(2, vocab_size) for _ in range(min(max_length, int(rng.lognormvariate(6.3, 0.8))))
                ],
                "labels": [rng.randrange(len(v)) for v in tasks.values()],
            }
            for _ in range(n)
        ], vocab_size
    tok = train_word_tokenizer(texts, min_count=1, max_vocab=vocab_size, max_length=max_length)
    ids = tok(texts, truncation=True)["input_ids"]
    rows = [{"input_ids": x, "labels": config.encode_labels(r)} for x, r in zip(ids, records) if x]
    return rows, len(tok)


def collate(features: list[dict]) -> dict[str, torch.Tensor]:
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(f["input_ids"]) for f in features], batch_first=True)
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).long(),
        "labels": torch.tensor([f["labels"] for f in features]),
    }


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (data loading included); a `TrainerCallback` or called by hand."""

    def __init__(self, device: str) -> None:
        self.times: list[float] = []
        self.sync = torch.device(device).type == "cuda"
        self.last = time.perf_counter()

    def tick(self) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now

    def on_train_begin(self, *args, **kwargs) -> None:
        self.last = time.perf_counter()

    def on_step_end(self, *args, **kwargs) -> None:
        self.tick()


def train(model, rows, *, steps: int, batch_size: int, seed: int, device: str, use_trainer: bool) -> list[float]:
    """The one training routine every arm uses; returns the wall seconds of each step."""
    timer = StepTimer(device)
    if use_trainer:
        from transformers import Trainer, TrainingArguments

        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=1e-3,
                lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, report_to="none",
                save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=seed, data_seed=seed,
                dataloader_num_workers=0, use_cpu=device == "cpu", remove_unused_columns=False,
            )  # fmt: skip
            trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[timer])
            with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its metrics; stdout is for the JSON lines
                trainer.train()
    else:
        model.to(device).train()
        fused = device == "cpu" or torch.device(device).type == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=fused)
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            rows, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=gen
        )
        timer.on_train_begin()
        while len(timer.times) < steps:
            for batch in loader:
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                timer.tick()
                if len(timer.times) == steps:
                    break
    return timer.times


def run_arm(arm: str, model_kwargs: dict, members: int, rows, **train_kwargs) -> tuple[float, float, list[float]]:
    """Wall and process-CPU seconds of one arm (CPU time is less sensitive to other tenants of a shared machine),
    and the wall time of each of its steps (one list over all members)."""
    start, cpu = time.perf_counter(), time.process_time()
    steps = []
    if arm == "vectorized":
        torch.manual_seed(0)
        model = MtCNNEnsembleForReportClassification(MtCNNEnsembleConfig(**model_kwargs, num_members=members))
        steps += train(model, rows, **train_kwargs)
    else:
        impl = "conv1d" if arm == "loop_conv1d" else "fused"
        for m in range(members):
            torch.manual_seed(m)
            model = MtCNNForReportClassification(MtCNNConfig(**model_kwargs, conv_impl=impl))
            steps += train(model, rows, **train_kwargs)
    return time.perf_counter() - start, time.process_time() - cpu, steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=16, help="Ensemble size N.")
    p.add_argument("--steps", type=int, default=30, help="Optimizer steps per member (paper size: steps // 10, >= 2).")
    p.add_argument("--sizes", default="small,paper,demo", help=f"Comma-separated subset of {list(SIZES)}.")
    p.add_argument("--device", default="cpu", help="cpu or cuda.")
    p.add_argument("--arms", default=",".join(ARMS), help=f"Comma-separated subset of {ARMS}.")
    p.add_argument("--repeats", type=int, default=1, help="Alternate the arms this many times; keep each arm's best.")
    p.add_argument(
        "--no-trainer", action="store_true", help="Use the plain shared loop instead of transformers.Trainer."
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if bad := [s for s in sizes if s not in SIZES] + [a for a in arms if a not in ARMS]:
        p.error(f"unknown size/arm {bad}")
    sizes.sort(key=lambda s: s == "demo")  # the demo's line is printed last
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    n_reports = max(64, args.steps * max(SIZES[s][4] for s in sizes))
    texts, records, tasks = load_corpus(n_reports, args.seed)
    for size in sizes:
        dim, filters, max_length, vocab, batch_size, divisor = SIZES[size]
        steps = max(2, args.steps // divisor)
        rows, tok_vocab = build_dataset(texts, records, tasks, vocab, max_length, n_reports, args.seed)
        model_kwargs = dict(
            vocab_size=max(vocab, tok_vocab), embedding_dim=dim, num_filters=filters, max_length=max_length,
            task_labels=tasks, dropout=0.5,
        )  # fmt: skip
        train_kwargs = dict(steps=steps, batch_size=batch_size, seed=args.seed, device=args.device)
        train_kwargs["use_trainer"] = not args.no_trainer
        log(f"[{size}] warm-up (untimed: imports, lazy library init) ...")
        for arm in arms:
            run_arm(arm, model_kwargs, 2, rows, **{**train_kwargs, "steps": 2})
        times: dict[str, float] = {}
        cpu_times: dict[str, float] = {}
        step_times: dict[str, list[float]] = {}
        for r in range(args.repeats):
            for arm in arms:
                log(f"[{size}] {arm} (repeat {r + 1}/{args.repeats}): {args.members} members x {steps} steps ...")
                t, c, per_step = run_arm(arm, model_kwargs, args.members, rows, **train_kwargs)
                times[arm] = min(t, times.get(arm, float("inf")))
                cpu_times[arm] = min(c, cpu_times.get(arm, float("inf")))
                step_times.setdefault(arm, []).extend(per_step)
                log(f"[{size}] {arm}: {t:.1f} s wall, {c:.1f} s CPU, median step {statistics.median(per_step):.3f} s")
        lengths = sorted(len(r["input_ids"]) for r in rows)
        rows_per_step = batch_size * (lengths[len(lengths) // 2] - min(MtCNNConfig.kernel_sizes) + 1)
        result = {
            "size": size, "members": args.members, "steps": steps, "batch_size": batch_size, "embedding_dim": dim,
            "num_filters": filters, "kernel_sizes": list(MtCNNConfig.kernel_sizes), "max_length": max_length,
            "vocab_size": model_kwargs["vocab_size"], "median_tokens": lengths[len(lengths) // 2],
            "device": args.device, "threads": torch.get_num_threads(), "trainer": not args.no_trainer,
            "member_chunk_size": member_chunk_size(
                MtCNNConfig(**model_kwargs), args.members, rows_per_step, torch.device(args.device), 4
            ),
        }  # fmt: skip
        result.update({f"{arm}_s": round(t, 2) for arm, t in times.items()})
        result.update({f"{arm}_cpu_s": round(t, 2) for arm, t in cpu_times.items()})
        # steady state: median step, excluding model/Trainer setup (per member-step for the loops)
        median_step = {arm: statistics.median(t) for arm, t in step_times.items()}
        result.update({f"{arm}_step_ms": round(1e3 * t, 2) for arm, t in median_step.items()})
        if "vectorized" in times:
            if "loop" in times:
                result["ratio"] = round(times["loop"] / times["vectorized"], 2)
                result["cpu_ratio"] = round(cpu_times["loop"] / cpu_times["vectorized"], 2)
                result["step_ratio"] = round(args.members * median_step["loop"] / median_step["vectorized"], 2)
            if "loop_conv1d" in times:
                result["ratio_vs_conv1d_loop"] = round(times["loop_conv1d"] / times["vectorized"], 2)
                result["step_ratio_vs_conv1d_loop"] = round(
                    args.members * median_step["loop_conv1d"] / median_step["vectorized"], 2
                )
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
