"""``reportkd extract``: tile whole-slide images and write one patch-features file per slide (resumable).

    reportkd extract ../shared/data/wsi --out runs/wsi --encoder uni_v1 --encoder-weights /models/uni.bin
    reportkd extract --slides-dir slides/ --out runs/wsi --encoder resnet50_trunc --mpp 0.25 --num-workers 4
    reportkd extract --slide-list slides.csv --out runs/wsi_conch --encoder conch_v1 --coords-dir runs/wsi/coords
    reportkd extract --list-encoders

Outputs in ``--out``: ``features/<slide>.safetensors`` (or ``.h5``), ``coords/<slide>.safetensors`` (reusable by
other encoders via ``--coords-dir``), ``extract_summary.json``, ``extract.log`` and, with ``--previews``,
``previews/<slide>.png``. A killed run restarts where it stopped: complete files of the same encoder and settings
are skipped, partial files are never left under a final name.

Resolution: ``--target-mpp`` (default 0.5) or ``--magnification`` (20 = 0.5 µm/px) is what patches are extracted
at; ``--mpp`` is the slide's own level-0 µm/px, used only for slides that do not record one (plain TIFFs, some
SVS). ``path,mpp`` lines in ``--slide-list`` set it per slide and override the file's value.

Exit status: 0 when at least one slide is done or skipped (has features) and, with ``--strict``, none failed or
lacks µm/px; 1 otherwise (a slide without tissue is reported as ``no_tissue`` and is not a success); 2 for a usage
error. Failed slides are listed with their reason and logged in ``extract.log``; the last line counts the slides
that succeeded, failed, had no tissue or need µm/px.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reportkd.errors import RuntimeFailure


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("slides")
    src.add_argument("slides", nargs="*", help="Slide files or folders of slides.")
    src.add_argument("--slides-dir", action="append", default=[], help="Folder of slides (repeatable).")
    src.add_argument("--slide-list", help="Text/CSV file: one `path` or `path,mpp` per line.")
    src.add_argument("--recursive", action="store_true", help="Look for slides in sub-folders too.")
    p.add_argument("--out", help="Output folder.")
    enc = p.add_argument_group("encoder")
    enc.add_argument("--encoder", help="Registered name (see --list-encoders), timm:NAME, hf:ID or hf-hub:ID.")
    enc.add_argument(
        "--encoder-weights",
        help="Local weights (file or folder; safetensors preferred) or a JSON map {name: path} for offline sites "
        "(default: $REPORTKD_ENCODER_WEIGHTS).",
    )
    enc.add_argument(
        "--random-weights", action="store_true", help="Random weights, no download: speed tests and demos only."
    )
    enc.add_argument("--list-encoders", action="store_true", help="List the registered encoders and exit.")
    res = p.add_argument_group("resolution and tiling")
    target = res.add_mutually_exclusive_group()
    target.add_argument("--target-mpp", type=float, help="µm/px to extract patches at (default 0.5).")
    target.add_argument("--magnification", type=float, help="Magnification to extract at (20 = 0.5 µm/px).")
    res.add_argument(
        "--mpp", "--slide-mpp", dest="mpp", type=float,
        help="Level-0 µm/px of slides that record none (e.g. 0.5 for a 20x scan, 0.25 for 40x).",
    )  # fmt: skip
    res.add_argument("--patch-size", type=int, default=224, help="Patch side in pixels at the target resolution.")
    res.add_argument("--tissue-threshold", type=float, default=0.25, help="Minimal tissue fraction of a patch.")
    res.add_argument("--coords-dir", help="Reuse coordinates from this folder (e.g. another run's OUT/coords).")
    res.add_argument("--reader", choices=("openslide", "tiffslide", "pil"), help="Force a reader (default: auto).")
    run_ = p.add_argument_group("run")
    run_.add_argument(
        "--batch-size", type=int, default=None, help="Patches per encoder call (default: 64 on CUDA, 8 on CPU)."
    )
    run_.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="Reading processes (default: cores - 1, max 8, on CUDA; 0 on CPUs with <= 4 cores).",
    )
    run_.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default on CPU: cores - workers, so readers and the model do not oversubscribe).",
    )  # fmt: skip
    run_.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available).")
    run_.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="Default: the encoder's on CUDA, fp32.")
    run_.add_argument("--format", choices=("safetensors", "h5"), default="safetensors", help="Features file format.")
    run_.add_argument("--overwrite", action="store_true", help="Recompute slides whose features exist.")
    run_.add_argument("--previews", action="store_true", help="Write previews/<slide>.png (mask and patches).")
    run_.add_argument("--strict", action="store_true", help="Exit 1 if any slide failed or lacks µm/px.")
    run_.add_argument("--no-progress", action="store_true", help="No progress bars.")


def collect_slides(args: argparse.Namespace) -> list:
    """The slides named by positional paths, ``--slides-dir`` and ``--slide-list``."""
    from reportkd.vlm.wsi import SlideSpec, find_slides, read_slide_list

    specs: list[SlideSpec] = []
    for item in [*args.slides, *args.slides_dir]:
        p = Path(item)
        if p.is_dir():
            found = find_slides(p, recursive=args.recursive)
            if not found:
                raise FileNotFoundError(f"No slide files in {p} (looked for .svs, .tif, .ndpi, .mrxs, ...).")
            specs += [SlideSpec(f) for f in found]
        elif p.is_file():
            specs.append(SlideSpec(p))
        else:
            raise FileNotFoundError(f"Slide or folder {p} does not exist.")
    if args.slide_list:
        specs += read_slide_list(args.slide_list)
    if not specs:
        raise ValueError("No slides given: pass slide files/folders, --slides-dir DIR or --slide-list FILE.")
    return specs


def format_summary(summary) -> str:
    """A plain-text table of an :class:`~reportkd.vlm.wsi.ExtractSummary` (full messages are in the JSON)."""
    rows = [f"{'slide':<28} {'status':<10} {'patches':>7} {'reader':<10} {'µm/px (source)':<20} {'s':>6}  note"]
    for r in summary.results:
        mpp = f"{r.slide_mpp:.4g} ({r.mpp_source})" if r.slide_mpp else (r.mpp_source or "-")
        message = "no µm/px recorded: pass --mpp MPP" if r.status == "needs_mpp" else r.message
        note = "; ".join(x for x in (message, r.reader_note) if x)
        note = note if len(note) <= 160 else note[:157] + "..."
        rows.append(
            f"{r.slide_id[:28]:<28} {r.status:<10} {r.num_patches:>7} {r.reader or '-':<10} {mpp:<20} "
            f"{r.seconds:>6.1f}  {note}"
        )
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items() if v)
    return "\n".join(rows + [f"slides: {counts}"])


def run(args: argparse.Namespace) -> int:
    import torch

    from reportkd.vlm.encoders import get_encoder, list_encoders
    from reportkd.vlm.wsi import extract_features

    if args.list_encoders:
        for name, desc in list_encoders().items():
            print(f"{name:<18} {desc}")
        return 0
    if not args.out:
        raise ValueError("--out is required (the output folder).")
    if not args.encoder:
        raise ValueError("--encoder is required; see `reportkd extract --list-encoders` (random-tiny-cnn for a demo).")
    specs = collect_slides(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights, wmap = None, None
    if args.encoder_weights:
        ew = Path(args.encoder_weights)
        weights, wmap = (None, ew) if ew.suffix == ".json" and ew.is_file() else (ew, None)
    try:
        encoder = get_encoder(
            args.encoder, weights, device=device, precision=args.precision, weights_map=wmap,
            random_init=args.random_weights,
        )  # fmt: skip
    except ImportError as e:
        print(f"reportkd extract: error: {e}", file=sys.stderr)
        return 2
    if encoder.random:
        print(f"note: {encoder.name} has RANDOM weights; its features carry no meaning (speed tests, demos).")
    cores = os.cpu_count() or 1
    if args.num_workers is not None:
        workers = args.num_workers
    elif encoder.device.type == "cuda":
        workers = max(0, min(8, cores - 1))  # reading must keep up with a GPU encoder
    else:  # CPU: the encoder is the bottleneck; reading processes would take its cores (benchmarks/wsi_extract_speed)
        workers = 0 if cores <= 4 else min(4, cores // 4)
    batch_size = args.batch_size or (64 if encoder.device.type == "cuda" else 8)
    threads = torch.get_num_threads()
    if args.threads is not None or encoder.device.type == "cpu":
        torch.set_num_threads(args.threads or max(1, cores - workers))
    try:
        summary = extract_features(
            specs, args.out, encoder, patch_size=args.patch_size, target_mpp=args.target_mpp,
            magnification=args.magnification, tissue_threshold=args.tissue_threshold, slide_mpp=args.mpp,
            batch_size=batch_size, num_workers=workers, fmt=args.format, coords_dir=args.coords_dir,
            overwrite=args.overwrite, save_previews=args.previews, backend=args.reader, progress=not args.no_progress,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    print(format_summary(summary))
    print(f"features: {Path(args.out) / 'features'}  summary: {Path(args.out) / 'extract_summary.json'}")
    c = summary.counts
    if c["needs_mpp"]:
        print(f"{c['needs_mpp']} slide(s) record no µm/px: rerun with --mpp MPP (their scan's level-0 µm/px).")
    print(summary.describe())
    if summary.succeeded == 0:
        raise RuntimeFailure(
            f"no slide was extracted (failed {c['failed']}, no tissue {c['no_tissue']}, need µm/px {c['needs_mpp']})."
            f" See {Path(args.out) / 'extract.log'} for the failures; pass --mpp MPP for slides without µm/px or a "
            "lower --tissue-threshold for slides without tissue"
        )
    if args.strict and (c["failed"] or c["needs_mpp"]):
        raise RuntimeFailure(
            f"--strict: {c['failed']} slide(s) failed and {c['needs_mpp']} need µm/px. See the table above; rerun "
            "with --mpp MPP for slides without µm/px (finished slides are skipped)"
        )
    return 0
