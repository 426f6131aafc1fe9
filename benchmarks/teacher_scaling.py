"""Teacher scaling on real TCGA reports: coverage at 97% vs ensemble size, mixed MtCNN + HiSAN vs MtCNN only, memory.

The teacher alone is measured (no student): on the fixed train / calibration / test split of
``benchmarks/abstention_tcga.py`` (its data preparation, split seed 0, ``max_length`` 512, the demo's training
arguments), one vectorized MtCNN ensemble of ``--mtcnn-members`` (default 16) and ``--hisan-members`` (8) HiSAN members
(trained one by one) are trained for ``--epochs`` on the job's out-of-fold masks (4 folds). Members of a vectorized
ensemble train exactly as they would alone (tested in ``tests/test_ensemble.py``), so an ensemble of k members is
read as a block of k consecutive members of the big one; every disjoint block of size k gives one value (mean ± sd
over blocks). Per size: accuracy, and the test coverage at 97% (empirical and Learn-then-Test thresholds, δ 0.1,
calibrated on the calibration split) of organ and cancer_type. Mixed teachers pair block j of the MtCNN members with
block j of the HiSAN members (equal shares) and are compared with MtCNN-only blocks of the same total size.

Memory: ``--memory`` trains 64 and 256 members (synthetic ids, vocab 5,000, embedding 64, 3×64 filters, length 256,
batch 16, AdamW) for a few steps in a fresh process each, without member chunking and with ``member_chunk_size``
16, and records the tensors saved for the backward of one forward, the peak RSS above the process start, the time
per step and the first loss (identical with and without chunking)::

    nice -n 10 python benchmarks/teacher_scaling.py --threads 1                         # all of it
    nice -n 10 python benchmarks/teacher_scaling.py --threads 1 --only mtcnn --train-only   # one group, cached
    python benchmarks/teacher_scaling.py --quick                                        # check the script
    python benchmarks/teacher_scaling.py --mtcnn-members 1000 --member-chunk-size 100 --hisan-members 0  # on a GPU

Trained groups' probabilities are cached (``outputs/teacher_scaling_cache``), so groups can be trained by separate
runs and the report rerun. Writes ``benchmarks/results/teacher_scaling.{json,md,png}``; prints the JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
TASKS = ("organ", "cancer_type")
FOLDS = 4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_probe(members: int, chunk: int | None, steps: int = 3, seed: int = 0) -> dict[str, Any]:
    """Trains a synthetic ensemble for a few steps; saved-for-backward bytes, peak RSS, seconds per step, losses.

    Args:
        members: Ensemble size.
        chunk: ``member_chunk_size`` (None: all members at once).
        steps: Optimizer steps.
        seed: Seed of weights and data.
    """
    from reportkd.text.mtcnn import MtCNNEnsembleConfig, MtCNNEnsembleForReportClassification

    torch.manual_seed(seed)
    config = MtCNNEnsembleConfig(vocab_size=5000, embedding_dim=64, num_filters=64, kernel_sizes=[3, 4, 5],
                                 dropout=0.0, task_labels={"organ": [f"o{i}" for i in range(20)],
                                                           "cancer_type": [f"c{i}" for i in range(30)]},
                                 num_members=members, member_chunk_size=chunk)  # fmt: skip
    model = MtCNNEnsembleForReportClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 5000, (16, 256), generator=g)
    labels = torch.stack([torch.randint(0, 20, (16,), generator=g), torch.randint(0, 30, (16,), generator=g)], 1)
    saved = [0]
    param_storages = {q.untyped_storage().data_ptr() for q in model.parameters()}

    def pack(t):  # activations only: views of the parameters cost no memory
        if t.untyped_storage().data_ptr() not in param_storages:
            saved[0] += t.numel() * t.element_size()
        return t

    start_rss = _rss_mb()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=labels)
    losses, times = [], []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        loss = model(ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
        losses.append(float(loss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    return {
        "members": members, "member_chunk_size": chunk, "parameters": params,
        "saved_for_backward_mb": round(saved[0] / 2**20, 2), "peak_rss_above_start_mb": round(peak - start_rss, 1),
        "peak_rss_mb": round(peak, 1), "seconds_per_step": round(min(times), 3), "losses": losses,
    }  # fmt: skip


def _run_memory(sizes: list[int], chunk: int, threads: int, log, cache: Path) -> list[dict[str, Any]]:
    path = cache / f"memory-{'_'.join(map(str, sizes))}-c{chunk}.json"
    if path.is_file():
        log(f"memory: cached ({path})")
        return json.loads(path.read_text())
    rows = []
    for members in sizes:
        for c in (None, chunk):
            cmd = [sys.executable, __file__, "--memory-probe", f"{members},{c or 0}", "--threads", str(threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            log(f"memory {members} members, chunk {c}: {json.dumps(rows[-1])}")
    from reportkd.utils import write_json

    write_json(path, rows)
    return rows


def _npz_save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from reportkd.utils import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def train_group(
    prepared, job, training_args, arch: str, members: int, cache: Path, log, chunk: int | None = None
) -> dict[str, Any]:
    """Trains one group (or loads it from the cache): member probabilities on calibration and test, wall time."""
    from reportkd.text.mtcnn.predict import predict_member_probs
    from reportkd.text.mtcnn.teachers import TeacherSpec, train_teacher_group

    spec = TeacherSpec(arch, members=members, member_chunk_size=chunk if arch == "mtcnn" else None)
    # HiSAN's own dropout (0.1) unless given, in percent (no dot: the stem takes suffixes)
    dropout = f"-d{round(100 * (spec.dropout or 0.1))}" if arch == "hisan" else ""
    stem = cache / f"{arch}{members}{dropout}-e{training_args.num_train_epochs:g}-s{training_args.seed}"
    if stem.with_suffix(".npz").is_file():
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(stem.with_suffix(".json").read_text())
        log(f"{arch} x{members}: cached ({meta['wall_time_s']:.0f} s when trained)")
        return {"arrays": arrays, **meta}
    group = train_teacher_group(prepared, job, training_args, spec, cache / "work" / stem.name, training_args.seed)
    pad = prepared.tokenizer.pad_token_id
    arrays = {}
    for split in ("calibration", "test"):
        per_model = [predict_member_probs(m, getattr(prepared, split), pad_token_id=pad) for m in group.models]
        for task in TASKS:
            stacked = [p[task] if p[task].ndim == 3 else p[task][None] for p in per_model]
            arrays[f"{split}/{task}"] = np.concatenate(stacked).astype(np.float32)  # (members, N, C)
    meta = {"architecture": arch, "members": members, "epochs": training_args.num_train_epochs,
            "wall_time_s": round(group.wall_time_s, 1),
            "seconds_per_member_epoch": round(group.wall_time_s / members / training_args.num_train_epochs, 2),
            "spec": dataclasses.asdict(spec)}  # fmt: skip
    _npz_save(stem.with_suffix(".npz"), arrays)
    from reportkd.utils import write_json

    write_json(stem.with_suffix(".json"), meta)
    log(f"{arch} x{members}: trained in {group.wall_time_s:.0f} s")
    return {"arrays": arrays, **meta}


def _metrics(member_arrays: list[tuple[dict[str, np.ndarray], np.ndarray]], labels, delta: float) -> dict:
    """Metrics of the mean over the selected members of one or more groups."""
    from reportkd.abstention import aurc, coverage_at_targets

    arrays = {}
    for key in member_arrays[0][0]:
        total = sum(a[key][idx].sum(0) for a, idx in member_arrays)
        arrays[key] = total / sum(len(idx) for _, idx in member_arrays)
    out = {}
    for task, test_y in labels["test"].items():
        test_p, keep = arrays[f"test/{task}"], test_y != -100
        cov = coverage_at_targets(arrays[f"calibration/{task}"], labels["calibration"][task], test_p, test_y,
                                  (0.90, 0.97), delta=delta)  # fmt: skip
        out[task] = {
            "accuracy": float((test_p.argmax(1)[keep] == test_y[keep]).mean()),
            "aurc": aurc(test_p, test_y),
            **{key: row["coverage"] for key, row in cov.items()},
            "ltt@0.97.selective_accuracy": cov["ltt@0.97"]["accuracy"],
        }
    return out


def _summary(values: list[dict]) -> dict:
    out = {}
    for task in values[0]:
        out[task] = {}
        for key in values[0][task]:
            xs = np.array([v[task][key] for v in values if v[task][key] is not None], dtype=float)
            out[task][key] = {"mean": float(xs.mean()) if xs.size else None,
                              "sd": float(xs.std(ddof=1)) if xs.size > 1 else 0.0, "n": int(xs.size)}  # fmt: skip
    return out


def scaling(groups: dict[str, dict], labels, delta: float) -> dict[str, dict]:
    """Per variant and size: metrics over the disjoint blocks of members (mean ± sd)."""
    rows: dict[str, dict] = {}
    mt, hs = groups.get("mtcnn"), groups.get("hisan")
    if mt:
        n = mt["members"]
        for k in [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= n]:
            blocks = [np.arange(j * k, (j + 1) * k) for j in range(n // k)]
            rows[f"mtcnn-{k}"] = _summary([_metrics([(mt["arrays"], b)], labels, delta) for b in blocks])
    if hs:
        n = hs["members"]
        for k in [k for k in (1, 2, 4, 8, 16, 32) if k <= n]:
            blocks = [np.arange(j * k, (j + 1) * k) for j in range(n // k)]
            rows[f"hisan-{k}"] = _summary([_metrics([(hs["arrays"], b)], labels, delta) for b in blocks])
    if mt and hs:
        for half in [k for k in (1, 2, 4, 8, 16, 32) if k <= min(mt["members"], hs["members"])]:
            n_blocks = min(mt["members"], hs["members"]) // half
            values = [_metrics([(mt["arrays"], np.arange(j * half, (j + 1) * half)),
                                (hs["arrays"], np.arange(j * half, (j + 1) * half))], labels, delta)
                      for j in range(n_blocks)]  # fmt: skip
            rows[f"mixed-{2 * half}"] = _summary(values)
    return rows


def markdown(rows: dict[str, dict], groups: dict[str, dict]) -> str:
    lines = ["| teacher | members | blocks | task | accuracy | coverage@0.97 empirical | coverage@0.97 LTT |"
             " coverage@0.90 LTT |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, per_task in rows.items():
        arch, k = name.rsplit("-", 1)
        for task, m in per_task.items():

            def f(key, m=m):
                v = m[key]
                return "—" if v["mean"] is None else f"{v['mean']:.3f} ± {v['sd']:.3f}"

            lines.append(f"| {arch} | {k} | {m['accuracy']['n']} | {task} | {f('accuracy')} | "
                         f"{f('empirical@0.97')} | {f('ltt@0.97')} | {f('ltt@0.90')} |")  # fmt: skip
    lines.append("")
    for g in groups.values():
        lines.append(f"- {g['architecture']}: {g['members']} members × {g['epochs']:g} epochs trained in "
                     f"{g['wall_time_s']:.0f} s ({g['seconds_per_member_epoch']:.1f} s per member-epoch)")  # fmt: skip
    return "\n".join(lines)


def memory_markdown(rows: list[dict]) -> str:
    lines = ["| members | member_chunk_size | parameters | saved for backward (MB) | peak RSS above start (MB) |"
             " s / step | first loss |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['members']} | {r['member_chunk_size'] or 'none'} | {r['parameters']:,} | "
                     f"{r['saved_for_backward_mb']} | {r['peak_rss_above_start_mb']} | {r['seconds_per_step']} | "
                     f"{r['losses'][0]:.6f} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: dict[str, dict], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reportkd.utils import atomic_path

    fig, axes = plt.subplots(1, len(TASKS), figsize=(5.5 * len(TASKS), 4))
    for ax, task in zip(np.atleast_1d(axes), TASKS):
        for arch, marker in (("mtcnn", "o"), ("hisan", "s"), ("mixed", "^")):
            for method, style in (("empirical", "-"), ("ltt", "--")):
                names = [n for n in rows if n.startswith(arch + "-")]
                if not names:
                    continue
                k = [int(n.rsplit("-", 1)[1]) for n in names]
                mean = np.array([rows[n][task][f"{method}@0.97"]["mean"] or np.nan for n in names])
                sd = np.array([rows[n][task][f"{method}@0.97"]["sd"] for n in names])
                ax.errorbar(k, mean, yerr=sd, marker=marker, linestyle=style, capsize=2,
                            label=f"{arch} ({method})")  # fmt: skip
        ax.set(xscale="log", xlabel="teacher members", ylabel="test coverage at 97% accuracy", title=task)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="TCGA reports (JSONL.gz).")
    p.add_argument("--mtcnn-members", type=int, default=16, help="MtCNN members (one vectorized ensemble).")
    p.add_argument("--hisan-members", type=int, default=8, help="HiSAN members (0: none).")
    p.add_argument("--epochs", type=float, default=3, help="Teacher epochs.")
    p.add_argument("--seed", type=int, default=0, help="Training seed.")
    p.add_argument("--member-chunk-size", type=int, default=None, help="MtCNN members per chunk (bounded memory).")
    p.add_argument("--only", choices=("mtcnn", "hisan"), help="Train only this group.")
    p.add_argument("--train-only", action="store_true", help="Train and cache; no report.")
    p.add_argument("--memory", action="store_true", help="Also run the memory probes (64 and 256 members).")
    p.add_argument("--memory-sizes", default="64,256", help="Ensemble sizes of the memory probes.")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--delta", type=float, default=0.1, help="LTT risk level.")
    p.add_argument("--threads", type=int, default=1, help="torch threads.")
    p.add_argument("--quick", action="store_true", help="Tiny settings to check the script (not a measurement).")
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "teacher_scaling_cache"))
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="teacher_scaling", help="Output file stem.")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        members, chunk = (int(x) for x in args.memory_probe.split(","))
        print(json.dumps(memory_probe(members, chunk or None)))
        return {}

    from reportkd.text.mtcnn.arguments import MtCNNJobArguments
    from reportkd.text.mtcnn.job import default_training_args
    from reportkd.text.mtcnn.pipeline import prepare_data
    from reportkd.text.mtcnn.predict import labels_by_task
    from reportkd.text.mtcnn.results import training_summary
    from reportkd.utils import write_json

    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"{data} not found: this benchmark needs ../shared/data/tcga-reports (or --data FILE).")
    cache = Path(args.cache_dir)
    job = MtCNNJobArguments(tasks=list(TASKS), max_length=512, split_seed=0, folds=FOLDS)
    targs = default_training_args(cache / "tmp", num_train_epochs=args.epochs, seed=args.seed, disable_tqdm=False,
                                  logging_strategy="no")  # fmt: skip
    if args.quick:
        job = dataclasses.replace(job, embedding_dim=16, num_filters=8, max_length=64)
        targs = dataclasses.replace(targs, num_train_epochs=1)
        args.mtcnn_members, args.hisan_members = 4, 4
        cache = cache / "quick"
    job = dataclasses.replace(job, teacher_epochs=targs.num_train_epochs)
    prepared = prepare_data(str(data), job, seed=args.seed)
    log(f"data: train {len(prepared.train)}, calibration {len(prepared.calibration)}, test {len(prepared.test)}")
    groups = {}
    for arch, members in (("mtcnn", args.mtcnn_members), ("hisan", args.hisan_members)):
        if members and args.only in (None, arch):
            groups[arch] = train_group(prepared, dataclasses.replace(job, members=members), targs, arch, members,
                                       cache, log, args.member_chunk_size)  # fmt: skip
    memory = (
        _run_memory([int(s) for s in args.memory_sizes.split(",")], 16, args.threads, log, cache)
        if args.memory
        else []
    )
    if args.train_only:
        return {}
    labels = {s: labels_by_task(getattr(prepared, s), prepared.task_labels) for s in ("calibration", "test")}
    rows = scaling(groups, labels, args.delta)
    out_dir = Path(args.out_dir) if not args.quick else cache
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, out_dir / f"{args.name}.png")
    md = markdown(rows, groups)
    if memory:
        md += "\n\n" + memory_markdown(memory)
    result = {
        "command": "python benchmarks/teacher_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"job": dataclasses.asdict(job), "training": training_summary(targs), "folds": FOLDS},
        "data": {
            "train": len(prepared.train),
            "calibration": len(prepared.calibration),
            "test": len(prepared.test),
            "classes": {t: len(v) for t, v in prepared.task_labels.items()},
        },  # fmt: skip
        "groups": {a: {k: v for k, v in g.items() if k != "arrays"} for a, g in groups.items()},
        "scaling": rows,
        "memory": memory,
        "figure": figure,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(out_dir / f"{args.name}.json", result)
    (out_dir / f"{args.name}.md").write_text(md + "\n")
    print(md, file=sys.stderr)
    print(json.dumps({"scaling": rows, "memory": memory}, indent=1))
    return result


if __name__ == "__main__":
    main()
