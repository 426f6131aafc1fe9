"""Patch-encoder distillation benchmark: multi-expert KD (GPFM), relation KD (HVisKD), DINO/iBOT (H0-mini).

Experts: two ViTs larger than the student, each trained (supervised, then frozen) on a different synthetic task so
they are good at different things. Default data (``--data morphology``): tiles whose labels are spatial and carry no
colour information (``reportkd.vlm.synthetic_tiles.render_morphology_tile``): expert ``A`` learns how nuclei are
arranged (scattered / clustered / aligned / ring), expert ``B`` nuclear shape (round / elongated / pleomorphic), so an
untrained student is weak on both (the ``random`` row). ``--data histology`` is the earlier, easier set-up (expert A
tissue class, B a nuclear attribute ``--task-b``), where an untrained student was already within 0.92 of the experts.

Students: one ViT at >= 4x fewer FLOPs, the same budget (steps x batch, the same unlabelled tiles: synthetic plus
``--real-train`` real tissue tiles from two slides of ``../shared/data/wsi``, HED stain jitter and flips) for every
variant unless its name says otherwise:

- ``random``: untrained (floor); ``scratch``: no teacher, EMA self-distillation only (the label-free anchor);
- ``kd_A`` / ``kd_B``: plain feature KD (cosine through a projection) from one expert;
- ``multi``: multi-expert KD, one head per expert (GPFM's expert term), no relations;
- ``multi_self``: + EMA self-distillation on local/global crops (GPFM);
- ``multi_relation``: + sample- and region-level relation KD (HVisKD; the config default);
- ``multi_norm`` / ``multi_relation_norm``: GPFM-style per-expert feature standardisation (running moments) of the
  expert targets, without / with relations;
- ``dino_ibot``: DINO + iBOT distillation from the frozen experts, 2 global views + local crops, masked tokens
  (H0-mini), stain jitter 0.05 on every view; ``dino_ibot_hed``: stain jitter ``--strong-hed`` on every view, the
  teachers see the same jittered view; ``dino_ibot_hed_clean``: the student's views jittered, the teachers see
  the un-jittered views (distillation for invariance, H0-mini's recipe); ``dino_ibot_relation_hed_clean``: the same
  plus sample and region relation KD (the experts' geometry directly); ``dino_ibot_soft_hed_clean``: 512 prototypes
  and teacher temperature 0.1 (softer targets: more of each expert's geometry survives the prototype head);
  ``dino_ibot_k512_hed_clean``: 512 prototypes only; ``dino_ibot_sharp_hed_clean``: teacher temperature 0.02 only;
- ``multi_relation_favA``: multi + relation KD with expert A (arrangement, the lagging task) weighted 2, B 1;
- ``*_long``: the same at ``--long-factor`` x the steps (not equal budget; ``kd_A_long`` / ``kd_B_long`` are the
  single-expert students at the multi-expert student's long budget).

Per expert task: linear-probe and kNN accuracy on held-out labelled tiles; agreement with each expert (CKA, kNN
overlap) on the labelled test tiles and on real tiles of a held-out slide; stain robustness (nearest neighbour among
4 HED stain variants is itself; cosine between variants) on the held-out slide's real tiles; images/s and GFLOPs.
Seeds paired (same seed: same student init and data order for every variant). JSON + PNG to ``--out``.

    nice -n 15 python benchmarks/patch_distill.py --threads 1 --variants random kd_A kd_B multi multi_relation \
        multi_norm multi_relation_norm --out benchmarks/results/patch_distill.json        # multi-expert (GPFM)
    nice -n 15 python benchmarks/patch_distill.py --threads 1 --variants random dino_ibot dino_ibot_hed \
        dino_ibot_hed_clean --out benchmarks/results/patch_distill_stain.json              # H0-mini stain study
    python benchmarks/patch_distill.py --quick                                             # seconds, a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from reportkd.utils import write_json
from reportkd.vlm.patch import MultiCropCollator, PatchDistillationConfig, PatchDistillationTrainer, PatchEncoder
from reportkd.vlm.patch.data import TileDataset, morphology_dataset, slide_tiles, synthetic_tiles
from reportkd.vlm.patch.evaluation import agreement, embed_pixels, embedder, probe_metrics, speed, stain_robustness
from reportkd.vlm.patch.experts import train_expert

ROOT = Path(__file__).resolve().parents[1]
WSI = ROOT.parent / "shared" / "data" / "wsi"
VARIANTS = {
    "random": None,
    "scratch": {"feature_weight": 0.0, "self_distill_weight": 1.0},
    "kd_A": {"feature_weight": 1.0, "experts": ["A"]},
    "kd_B": {"feature_weight": 1.0, "experts": ["B"]},
    "multi": {"feature_weight": 1.0},
    "multi_self": {"feature_weight": 1.0, "self_distill_weight": 0.5},
    "multi_relation": {"feature_weight": 1.0, "relation_sample_weight": 1.0, "relation_region_weight": 1.0},
    "multi_norm": {"feature_weight": 1.0, "expert_feature_norm": "standardize"},
    "multi_relation_norm": {
        "feature_weight": 1.0,
        "relation_sample_weight": 1.0,
        "relation_region_weight": 1.0,
        "expert_feature_norm": "standardize",
    },  # fmt: skip
    "dino_ibot": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0},
    "dino_ibot_hed": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "strong"},
    "dino_ibot_hed_clean": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "clean"},
    "dino_ibot_relation_hed_clean": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "clean",
                                     "relation_sample_weight": 1.0, "relation_region_weight": 1.0},
    "dino_ibot_soft_hed_clean": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "clean",
                                 "dino_out_dim": 512, "teacher_temperature": 0.1},
    "dino_ibot_k512_hed_clean": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "clean",
                                 "dino_out_dim": 512},
    "dino_ibot_sharp_hed_clean": {"feature_weight": 0.0, "dino_weight": 1.0, "ibot_weight": 1.0, "hed": "clean",
                                  "teacher_temperature": 0.02},
}  # fmt: skip
VARIANTS["multi_relation_favA"] = {**VARIANTS["multi_relation"], "expert_weights": {"A": 2.0, "B": 1.0}}
for _name in ("kd_A", "kd_B", "multi", "multi_relation", "multi_norm", "multi_relation_norm", "multi_relation_favA",
              "dino_ibot_hed_clean", "dino_ibot_relation_hed_clean"):  # fmt: skip
    VARIANTS[f"{_name}_long"] = {**VARIANTS[_name], "long": True}
MULTI_CROP = ("multi_self", "scratch", *(v for v in VARIANTS if v.startswith("dino_ibot") and not v.endswith("_long")))
TASKS = {"morphology": ("arrangement", "shape"), "histology": ("tissue", None)}
TRAIN_SLIDES = ("kidney-48-5.tif", "tcga-cr-7395-01a-01-ts1.svs")  # unlabelled real tiles for distillation
HELD_OUT_SLIDE = "cmu-1-small-region.svs"  # agreement and stain robustness on real tiles


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def vit(size: int, dim: int, depth: int, heads: int) -> PatchEncoder:
    return PatchEncoder("vit_small_patch16_224", {"img_size": size, "patch_size": 8, "embed_dim": dim, "depth": depth,
                                                  "num_heads": heads, "mlp_ratio": 2.0}, image_size=size)  # fmt: skip


def student_setup(variant: str, opts, seed: int, size: int, output_dir: str):
    """A variant's ``(PatchDistillationConfig, expert names or None for all, collator)`` at ``opts``' budget."""
    spec = {"relation_sample_weight": 0.0, "relation_region_weight": 0.0, **VARIANTS[variant]}  # off unless named
    names = spec.pop("experts", None)
    hed, steps = spec.pop("hed", None), opts.steps * (opts.long_factor if spec.pop("long", False) else 1)
    crops = variant.removesuffix("_long") in MULTI_CROP
    collator = MultiCropCollator(
        size, num_global=2 if crops else 1, global_scale=(0.5, 1.0) if crops else (1.0, 1.0),
        num_local=2 if crops else 0, local_size=size // 2, hed_sigma=opts.strong_hed if hed else 0.05,
        mask_ratio=0.3 if spec.get("ibot_weight") else 0.0, num_patches=(size // 8) ** 2,
        clean_teacher_views=hed == "clean",
    )  # fmt: skip
    args = PatchDistillationConfig(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=opts.batch, learning_rate=opts.lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), weight_decay=0.05, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=max(1, steps // 4), seed=seed,
        dataloader_drop_last=True,
        **{"dino_out_dim": 128, "dino_hidden_dim": 128, "dino_bottleneck_dim": 32, **spec},
    )  # fmt: skip
    return args, names, collator


def train_student(variant: str, experts: dict, data: TileDataset, opts, seed: int, size: int) -> PatchEncoder:
    torch.manual_seed(seed)
    student = vit(size, *opts.student)
    if VARIANTS[variant] is None:
        return student.eval()
    with tempfile.TemporaryDirectory() as tmp:
        args, names, collator = student_setup(variant, opts, seed, size, tmp)
        teachers = {n: experts[n] for n in names or experts}
        trainer = PatchDistillationTrainer(student, teachers=teachers, args=args, train_dataset=data,
                                           data_collator=collator)  # fmt: skip
        trainer.train()
    return student.eval()


def _stat(vals: list[float]) -> dict:
    return {"mean": statistics.mean(vals), "sd": statistics.pstdev(vals), "values": vals}


def summarise(runs: dict[str, list[dict]], tasks: list[str], best: dict[str, float]) -> dict:
    """Per variant: mean / sd / per-seed values of probes, ratio to the best expert, stain robustness, agreement."""
    out = {}
    for name, results in runs.items():
        row = {}
        for task in tasks:
            for metric in ("linear_probe_acc", "knn_acc"):
                row[f"{task}/{metric}"] = _stat([r["probes"][task][metric] for r in results])
            ratios = [r["probes"][task]["linear_probe_acc"] / best[task] for r in results]
            row[f"{task}/ratio_to_best_expert"] = {**_stat(ratios), "seeds_at_0.95": sum(x >= 0.95 for x in ratios)}
        for metric in ("stain_top1", "stain_cosine"):
            row[metric] = _stat([r["stain"][metric] for r in results])
        for expert in ("A", "B"):
            for where in ("agreement", "agreement_real"):
                if all(expert in r.get(where, {}) for r in results):
                    row[f"cka_{expert}" + ("_real" if where.endswith("real") else "")] = statistics.mean(
                        r[where][expert]["cka"] for r in results
                    )
        out[name] = row
    return out


def plot(results: dict, path: Path) -> Path:
    """Bar chart: linear-probe accuracy per task (mean ± sd over seeds) for each student, experts as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, experts = results["summary"], results["experts"]
    tasks = [k.split("/")[0] for k in next(iter(summary.values())) if k.endswith("/linear_probe_acc")]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.5 * (len(tasks) + 1), 4))
    names = list(summary)
    for ax, task in zip(axes, tasks):
        cell = [summary[n][f"{task}/linear_probe_acc"] for n in names]
        ax.bar(range(len(names)), [c["mean"] for c in cell], yerr=[c["sd"] for c in cell], color="tab:blue")
        for (e, res), style in zip(experts.items(), ("--", ":")):
            ax.axhline(res["probes"][task]["linear_probe_acc"], color="k", ls=style, label=f"expert {e}")
        low = min([c["mean"] for c in cell] + [r["probes"][task]["linear_probe_acc"] for r in experts.values()]) - 0.05
        ax.set_ylim(max(0.0, low), 1.0)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(f"{task}: linear probe accuracy")
        ax.legend(fontsize=8)
    ax = axes[-1]
    ax.bar(range(len(names)), [summary[n]["stain_top1"]["mean"] for n in names],
           yerr=[summary[n]["stain_top1"]["sd"] for n in names], color="tab:green")  # fmt: skip
    for (e, res), style in zip(experts.items(), ("--", ":")):
        ax.axhline(res["stain"]["stain_top1"], color="k", ls=style, label=f"expert {e}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_title("stain robustness: top-1 self-match")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--data", choices=sorted(TASKS), default="morphology", help="Labelled synthetic tasks.")
    p.add_argument("--task-b", default="density", help="Expert B's task with --data histology.")
    p.add_argument("--unlabelled", type=int, default=2000, help="Unlabelled synthetic distillation tiles.")
    p.add_argument("--real-train", type=int, default=400, help="Unlabelled real tiles per training slide (0: none).")
    p.add_argument("--expert-steps", type=int, default=600)
    p.add_argument("--steps", type=int, default=400, help="Student steps (every variant but *_long).")
    p.add_argument("--long-factor", type=int, default=2, help="Step multiplier of the *_long variants.")
    p.add_argument("--strong-hed", type=float, default=0.2, help="Stain jitter of the dino_ibot_hed* variants.")
    p.add_argument(
        "--student",
        type=int,
        nargs=3,
        default=[32, 2, 2],
        metavar=("WIDTH", "DEPTH", "HEADS"),
        help="Student ViT (experts: 96, 3, 3; the default is 10.8x fewer FLOPs).",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument(
        "--experts-dir",
        default=None,
        help="Save the trained experts here, or load them when present (runs that split the variants).",
    )
    p.add_argument("--quick", action="store_true", help="Tiny sizes: a smoke test.")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "patch_distill.json"))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--plot-only", action="store_true", help="Redraw the PNG from the JSON of --out.")
    opts = p.parse_args(argv)
    if opts.plot_only:
        results = json.loads(Path(opts.out).read_text())
        print(plot(results, Path(opts.out).with_suffix(".png")))
        return results
    out = Path(opts.out)
    if out.exists() and not opts.overwrite and not opts.quick:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it.")
    if opts.quick:
        opts.unlabelled, opts.expert_steps, opts.steps, opts.seeds, opts.batch = 128, 5, 3, [0], 16
        opts.real_train = 0
    opts.student = tuple(opts.student)
    torch.set_num_threads(opts.threads)
    size, start = opts.image_size, time.time()
    n_lab = 200 if opts.quick else 2000
    if opts.data == "morphology":
        tasks = list(TASKS["morphology"])
        labelled, probe_train = morphology_dataset(n_lab, image_size=size, seed=10), morphology_dataset(
            n_lab // 2, image_size=size, seed=20)  # fmt: skip
        probe_test = morphology_dataset(n_lab // 4 if opts.quick else 800, image_size=size, seed=30)
        unlabelled = morphology_dataset(opts.unlabelled, image_size=size, seed=0).tiles
    else:
        tasks = ["tissue", opts.task_b]
        labelled = synthetic_tiles(n_lab, image_size=size, seed=10, tasks=tasks)
        probe_train = synthetic_tiles(n_lab // 2, image_size=size, seed=20, tasks=tasks)
        probe_test = synthetic_tiles(n_lab // 4 if opts.quick else 800, image_size=size, seed=30, tasks=tasks)
        unlabelled = synthetic_tiles(opts.unlabelled, image_size=size, seed=0, tasks=()).tiles
    real = None
    if WSI.is_dir() and not opts.quick:
        real = slide_tiles(WSI / HELD_OUT_SLIDE, image_size=size, max_tiles_per_slide=200).pixels()
        if opts.real_train:
            train_real = slide_tiles([WSI / n for n in TRAIN_SLIDES], image_size=size,
                                     max_tiles_per_slide=opts.real_train, seed=1, mpp=0.5)  # fmt: skip
            unlabelled = torch.cat([unlabelled, train_real.tiles])
    unlabelled = TileDataset(unlabelled, source="distillation tiles")
    robustness_tiles = real if real is not None else probe_test.pixels()
    log(f"data ready ({time.time() - start:.0f}s): {len(unlabelled)} unlabelled tiles; stain / agreement tiles: "
        f"{'real, held-out slide' if real is not None else 'synthetic'}")  # fmt: skip

    torch.manual_seed(100)  # expert initialisation independent of what ran before
    experts = {"A": vit(size, 96, 3, 3), "B": vit(size, 96, 3, 3)}
    for (name, enc), task in zip(experts.items(), tasks):
        saved = Path(opts.experts_dir or "-") / f"{opts.data}_{name}_{task}_{opts.expert_steps}"
        if opts.experts_dir and (saved / "model.safetensors").is_file():
            experts[name] = PatchEncoder.from_pretrained(saved).eval().requires_grad_(False)
            log(f"expert {name} ({task}) loaded from {saved}")
            continue
        log(f"training expert {name} on {task}")
        train_expert(enc, labelled, task, steps=opts.expert_steps, batch_size=opts.batch, seed=100)
        if opts.experts_dir:
            enc.save_pretrained(saved)
    results: dict = {"tasks": tasks, "experts": {}, "students": {}}
    for name, enc in experts.items():
        res = {"probes": probe_metrics(embedder(enc), probe_train, probe_test),
               "stain": stain_robustness(embedder(enc), robustness_tiles),
               "speed": speed(enc, size, seconds=1)}  # fmt: skip
        results["experts"][name] = res
        log(f"expert {name}: {json.dumps(res)}")
    best = {t: max(results["experts"][e]["probes"][t]["linear_probe_acc"] for e in experts) for t in tasks}
    test_emb = {n: embed_pixels(embedder(e), probe_test.pixels()) for n, e in experts.items()}
    real_emb = {n: embed_pixels(embedder(e), real) for n, e in experts.items()} if real is not None else {}
    runs: dict[str, list[dict]] = {}
    for variant in opts.variants:
        for seed in opts.seeds:
            t0 = time.time()
            student = train_student(variant, experts, unlabelled, opts, seed, size)
            emb = embedder(student)
            res = {"seed": seed, "probes": probe_metrics(emb, probe_train, probe_test),
                   "stain": stain_robustness(emb, robustness_tiles), "train_s": time.time() - t0}  # fmt: skip
            mine = embed_pixels(emb, probe_test.pixels())
            res["agreement"] = {n: agreement(mine, t) for n, t in test_emb.items()}
            if real is not None:
                mine = embed_pixels(emb, real)
                res["agreement_real"] = {n: agreement(mine, t) for n, t in real_emb.items()}
            runs.setdefault(variant, []).append(res)
            log(f"{variant} seed {seed} ({res['train_s']:.0f}s): {json.dumps(res['probes'])} {res['stain']}")
            if "speed_student" not in results:
                results["speed_student"] = speed(student, size, seconds=1)
    results["students"] = runs
    results["summary"] = summarise(runs, tasks, best)
    ratio = {v: {t: results["summary"][v][f"{t}/ratio_to_best_expert"]["mean"] for t in tasks} for v in runs}
    results["ratio_to_best_expert"] = ratio
    flops_e, flops_s = results["experts"]["A"]["speed"]["gflops"], results["speed_student"]["gflops"]
    results["flops_ratio"] = flops_e / flops_s
    results["settings"] = {k: v for k, v in vars(opts).items()}
    results["wall_s"] = time.time() - start
    if not opts.quick:
        write_json(out, results)
        plot(results, out.with_suffix(".png"))
    print(json.dumps({"summary": results["summary"], "ratio_to_best_expert": ratio,
                      "flops_ratio": results["flops_ratio"]}, indent=1))  # fmt: skip
    return results


if __name__ == "__main__":
    main()
