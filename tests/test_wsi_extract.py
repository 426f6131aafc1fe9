"""``extract_features``: outputs, resume after a kill, corrupt slides, coords reuse, HDF5."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reportkd.vlm.encoders import get_encoder
from reportkd.vlm.wsi import (
    SlideSpec,
    extract_features,
    load_features,
    load_patch_grid,
    load_slide_features,
    write_synthetic_slide,
)

OPTS = {"patch_size": 64, "batch_size": 16, "progress": False}


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("slides")
    return [write_synthetic_slide(d / f"slide-{i}.tif", size=(640, 512), levels=2, seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("random-tiny-cnn")


def test_features_files_match_coords_and_recompute_identically(tmp_path, slides, encoder):
    s = extract_features(slides[:2], tmp_path, encoder, save_previews=True, **OPTS)
    assert s.counts["done"] == 2 and s.counts["failed"] == 0
    sf = load_slide_features(tmp_path / "features" / "slide-0.safetensors")
    grid = load_patch_grid(tmp_path / "coords" / "slide-0.safetensors")
    assert sf.features.shape == (len(grid), 64) and sf.encoder == "random-tiny-cnn"
    np.testing.assert_array_equal(sf.coords.numpy(), grid.coords)
    assert sf.patch_size_level0 == 64 and sf.metadata["target_mpp"] == 0.5 and sf.metadata["random_weights"] is True
    assert sf.metadata["reader"] == "openslide" and sf.grid.min() == 0
    assert (tmp_path / "previews" / "slide-0.png").is_file() and (tmp_path / "extract.log").is_file()
    # batching and workers do not change the features
    ds = extract_features(slides[:1], tmp_path / "w", encoder, num_workers=2, **{**OPTS, "batch_size": 5})
    assert ds.counts["done"] == 1
    other = load_slide_features(tmp_path / "w" / "features" / "slide-0.safetensors")
    torch.testing.assert_close(other.features, sf.features)


def test_killed_run_restarts_without_redoing_finished_slides(tmp_path, slides):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        import reportkd.vlm.wsi.features as F
        from reportkd.vlm.wsi import extract_features
        real, calls = F.save_file, []
        def dying_save(tensors, filename, metadata=None):  # the 2nd slide's write is killed half-way
            calls.append(filename)
            real(tensors, filename, metadata=metadata)
            if len(calls) == 2:
                with open(filename, "r+b") as f:
                    f.truncate(64)
                os.kill(os.getpid(), signal.SIGKILL)
        F.save_file = dying_save
        extract_features({[str(p) for p in slides]!r}, {str(out)!r}, "random-tiny-cnn", patch_size=64,
                         progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    feats = out / "features"
    assert (feats / "slide-0.safetensors").is_file() and not (feats / "slide-1.safetensors").exists()
    assert len(list(feats.glob(".slide-1.safetensors.*.tmp"))) == 1  # the partial file never got the final name
    first_mtime = (feats / "slide-0.safetensors").stat().st_mtime_ns

    seen = []
    s = extract_features(slides, out, "random-tiny-cnn", on_slide_end=seen.append, **OPTS)
    assert [r.status for r in seen] == ["skipped", "done", "done"] and s.counts == {
        "done": 2, "skipped": 1, "needs_mpp": 0, "no_tissue": 0, "failed": 0,
    }  # fmt: skip
    assert (feats / "slide-0.safetensors").stat().st_mtime_ns == first_mtime
    assert (
        not list(feats.glob(".*.tmp")) and load_slide_features(feats / "slide-1.safetensors").features.shape[1] == 64
    )


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_corrupt_slide_is_counted_and_the_others_continue(tmp_path, slides, encoder):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(2000))
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(slides[0].read_bytes()[: slides[0].stat().st_size // 2])
    s = extract_features([bad, slides[0], trunc, slides[1]], tmp_path / "o", encoder, **OPTS)
    by = {r.slide_id: r for r in s.results}
    assert by["broken"].status == "failed" and "openslide" in by["broken"].message
    assert by["trunc"].status == "failed" and by["slide-0"].status == by["slide-1"].status == "done"
    log = (tmp_path / "o" / "extract.log").read_text()
    assert "broken" in log and "trunc" in log and "Traceback" in log
    summary = (tmp_path / "o" / "extract_summary.json").read_text()
    assert '"failed": 2' in summary


def test_missing_mpp_other_encoder_and_per_slide_mpp(tmp_path, slides, encoder):
    from PIL import Image

    plain = tmp_path / "plain.tiff"
    Image.fromarray(np.asarray(Image.open(slides[0]).convert("RGB"))).save(plain)  # pixels kept, no resolution
    s = extract_features([plain], tmp_path / "o", encoder, **OPTS)
    assert s.results[0].status == "needs_mpp" and "--mpp" in s.results[0].message
    s = extract_features([SlideSpec(plain, mpp=0.5)], tmp_path / "o", encoder, **OPTS)
    assert s.results[0].status == "done" and s.results[0].mpp_source == "user"
    other = get_encoder("random-tiny-cnn", seed=3)
    other.name = "tiny-seed3"
    s = extract_features([SlideSpec(plain, mpp=0.5)], tmp_path / "o", other, **OPTS)
    assert s.results[0].status == "failed" and "--overwrite" in s.results[0].message
    s = extract_features([SlideSpec(plain, mpp=0.25)], tmp_path / "o", encoder, **OPTS)
    assert s.results[0].status == "failed" and "slide_mpp" in s.results[0].message  # stale settings are not reused


def test_coords_reused_across_encoders_and_hdf5(tmp_path, slides, encoder):
    extract_features(slides[:1], tmp_path / "a", encoder, **OPTS)
    other = get_encoder("random-tiny-cnn", seed=5, dim=32)
    other.name = "tiny32"
    s = extract_features(slides[:1], tmp_path / "b", other, coords_dir=tmp_path / "a" / "coords", fmt="h5", **OPTS)
    assert s.counts["done"] == 1
    a = load_features(tmp_path / "a" / "features" / "slide-0.safetensors")
    b = load_features(tmp_path / "b" / "features" / "slide-0.h5")
    assert torch.equal(a.coords, b.coords) and b.features.shape[1] == 32 and b.encoder == "tiny32"
    assert b.metadata["target_mpp"] == 0.5
    s = extract_features(slides[:1], tmp_path / "d", encoder, coords_dir=tmp_path / "a" / "coords",
                         **{**OPTS, "patch_size": 32})  # fmt: skip
    assert s.results[0].status == "failed" and "--coords-dir" in s.results[0].message
