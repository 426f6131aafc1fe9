"""``reportkd embed``: one embedding per slide from patch-features files, with a slide encoder (resumable).

    reportkd embed runs/wsi/features --slide-encoder runs/slide_distill/student --out slides.h5
    reportkd embed trident_out/20x_512px_0px_overlap/features_conch_v15 --slide-encoder mean --out slides.npz
    reportkd embed --list-slide-encoders

Features: folders or files in any readable layout (reportkd ``.safetensors`` / ``.h5``, TRIDENT ``.h5``, CLAM /
TRIDENT ``.pt``); a ``reportkd extract --out`` folder is read through its ``features/``. The slide encoder is a
folder saved by a reportkd slide encoder (its patch-feature width must match the files') or a registered name
(``--list-slide-encoders``). The output ``.h5`` / ``.npz`` holds ``embeddings (N, D)``, ``slide_ids`` and the
settings (:mod:`reportkd.vlm.slide.embed`); it is written atomically, never replaced without ``--overwrite``, and a
killed run started again skips the slides it finished (kept in ``OUT.work/`` until the output is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", nargs="*", help="Features folders or files (.safetensors, .h5, .pt).")
    p.add_argument("--slide-encoder", help="A saved reportkd slide-encoder folder or a registered name (e.g. mean).")
    p.add_argument("--out", help="Output file: .h5 or .npz.")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available).")
    p.add_argument(
        "--overwrite", action="store_true", help="Replace --out, and discard unfinished work of other runs."
    )
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    p.add_argument("--list-slide-encoders", action="store_true", help="List the registered slide encoders and exit.")


def collect_features(items: list[str]) -> dict[str, Path]:
    """slide_id → features file for folders and files (a slide id seen twice is an error naming both files)."""
    from reportkd.vlm.slide.data import SUFFIXES, _stem, features_files

    files: dict[str, Path] = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = features_files(path)
        elif path.is_file():
            if not path.name.endswith(SUFFIXES):
                raise ValueError(f"{path}: not a features file; expected {', '.join(SUFFIXES)}.")
            found = {_stem(path): path}
        else:
            raise FileNotFoundError(f"Features folder or file {path} does not exist.")
        for slide_id, file in found.items():
            if slide_id in files and files[slide_id] != file:
                raise ValueError(f"Slide {slide_id!r} has two features files: {files[slide_id]} and {file}; keep one.")
            files[slide_id] = file
    return files


def run(args: argparse.Namespace) -> int:
    from reportkd.vlm.slide.embed import SLIDE_ENCODERS, embed_slides, load_slide_embedder

    if args.list_slide_encoders:
        for name in SLIDE_ENCODERS.names():
            doc = (SLIDE_ENCODERS.get(name).__doc__ or "").strip().splitlines() or [""]
            print(f"{name:<12} {doc[0]}")
        print("(or a folder saved by a reportkd slide encoder)")
        return 0
    if not args.features:
        raise ValueError("No features given: pass features folders or files (e.g. runs/wsi/features).")
    if not args.slide_encoder:
        raise ValueError(
            "--slide-encoder is required: a saved slide-encoder folder or a name (--list-slide-encoders)."
        )
    if not args.out:
        raise ValueError("--out is required: the output .h5 or .npz file.")
    files = collect_features(args.features)
    if Path(args.out).resolve() in {p.resolve() for p in files.values()}:
        raise ValueError(f"--out {args.out} is one of the features files; write to another file.")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    embedder = load_slide_embedder(args.slide_encoder, device=device)
    summary = embed_slides(files, embedder, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    resumed = f", {summary['resumed']} from an interrupted run" if summary["resumed"] else ""
    print(
        f"Embedded {summary['slides']} slides ({summary['computed']} computed{resumed}) with {embedder.name}: "
        f"{summary['dim']}-d → {summary['out']}"
    )
    return 0
