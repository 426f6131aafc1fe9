"""WSI reading (OpenSlide / tiffslide / PIL), tissue masks and patch grids on the package's synthetic slide."""

from pathlib import Path

import numpy as np
import pytest
import torch

from reportkd.vlm.wsi import (
    READERS,
    MissingMPPError,
    PatchDataset,
    SlideReadError,
    compute_tissue_mask,
    load_patch_grid,
    make_patch_grid,
    make_patch_loader,
    open_slide,
    otsu_threshold,
    render_patch_grid,
    resolve_target_mpp,
    save_patch_grid,
    tissue_mask_from_rgb,
    write_synthetic_slide,
)
from reportkd.vlm.wsi.reader import SlideReader, register_reader

BACKENDS = ("openslide", "tiffslide", "pil")


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return write_synthetic_slide(tmp_path_factory.mktemp("wsi") / "s.tif", size=(1024, 768), mpp=0.5, levels=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_reads_the_synthetic_slide_with_its_mpp(slide, backend):
    with open_slide(slide, backend=backend) as r:
        assert r.backend == backend and r.dimensions == (1024, 768)
        assert r.mpp == pytest.approx(0.5) and r.mpp_source == "slide"
        patch = r.read_region((100, 200), 0, (32, 16))
        assert patch.shape == (16, 32, 3) and patch.dtype == np.uint8
        edge = r.read_region((1000, 760), 0, (64, 64))  # crosses the border: padded white, not black
        assert edge.shape == (64, 64, 3) and (edge[-1, -1] == 255).all()
    if backend != "pil":
        with open_slide(slide, backend=backend) as r:
            assert r.level_count == 3 and r.level_downsamples[1] == pytest.approx(2.0)


def test_backends_agree_pixel_for_pixel(slide):
    regions = []
    for b in BACKENDS:
        with open_slide(slide, backend=b) as r:
            regions.append(r.read_region((300, 260), 0, (48, 40)).astype(int))
    assert all(np.abs(regions[0] - x).max() == 0 for x in regions[1:])  # zlib tiles are lossless


def test_mpp_override_fallback_and_missing(tmp_path, slide):
    with open_slide(slide, mpp=0.25) as r:  # the slide records 0.5: a fallback does not override it
        assert r.mpp == pytest.approx(0.5)
    with open_slide(slide, mpp=0.25, override_mpp=True) as r:
        assert r.mpp == 0.25 and r.mpp_source == "user"
    from PIL import Image

    plain = tmp_path / "plain.tif"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(plain)  # a plain TIFF without resolution
    with open_slide(plain) as r:
        assert r.backend != "openslide" and r.fallback_reasons and r.mpp is None
        with pytest.raises(MissingMPPError, match="--mpp"):
            make_patch_grid(r)
    with open_slide(plain, mpp=0.5) as r:
        assert r.mpp_source == "user" and make_patch_grid(r, patch_size=64, tissue_threshold=0).patch_size_level0 == 64


def test_unreadable_file_names_every_backend(tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"\x00not a slide" * 100)
    with pytest.raises(SlideReadError) as e:
        open_slide(bad)
    assert all(b in str(e.value) for b in BACKENDS) and "corrupt" in str(e.value)
    with pytest.raises(FileNotFoundError):
        open_slide(tmp_path / "missing.svs")


def test_reader_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_reader("openslide")(type("Dup", (SlideReader,), {}))
    with pytest.raises(KeyError, match="openslide, pil, tiffslide"):
        READERS.get("bioformats")


def test_otsu_and_tissue_mask_fill_holes_and_drop_specks():
    assert otsu_threshold(np.r_[np.full(500, 0.1), np.full(500, 0.7)]) == pytest.approx(0.4, abs=0.11)
    img = np.full((200, 200, 3), 240, np.uint8)
    img[40:160, 40:160] = (200, 90, 160)  # tissue
    img[90:110, 90:110] = 240  # a lumen inside it
    img[5:7, 190:192] = (200, 90, 160)  # a 4-pixel speck
    mask, threshold = tissue_mask_from_rgb(img)
    assert mask[100, 100] and mask[50, 50] and not mask[6, 191] and not mask[10, 10]
    assert 0.05 <= threshold < 0.5
    empty, _ = tissue_mask_from_rgb(
        np.full((64, 64, 3), 245, np.uint8) + np.random.default_rng(0).integers(0, 3, (64, 64, 3), dtype=np.uint8)
    )
    assert not empty.any()  # background noise stays background (threshold floor)


def test_patch_grid_at_target_resolution_picks_the_pyramid_level(slide):
    assert resolve_target_mpp(magnification=20) == 0.5 and resolve_target_mpp() == 0.5
    with pytest.raises(ValueError, match="not both"):
        resolve_target_mpp(0.5, 20)
    with open_slide(slide) as r:
        mask = compute_tissue_mask(r, max_size=256)
        assert 0.15 < mask.mask.mean() < 0.6
        g20 = make_patch_grid(r, patch_size=64, target_mpp=0.5, mask=mask)
        g10 = make_patch_grid(r, patch_size=64, magnification=10, mask=mask)  # 1 µm/px: level 1 (2x) read as is
        g5 = make_patch_grid(r, patch_size=64, target_mpp=1.5, mask=mask)  # 3x: level 1, 96 px resized to 64
    assert (g20.level, g20.read_size, g20.patch_size_level0) == (0, 64, 64)
    assert (g10.level, g10.read_size, g10.patch_size_level0) == (1, 64, 128)
    assert (g5.level, g5.read_size, g5.patch_size_level0) == (1, 96, 192)
    assert len(g20) > len(g10) > 0 and (g20.tissue_fraction >= 0.25).all()
    assert (g20.coords % 64 == 0).all() and (g20.coords[:, 0] + 64 <= 1024).all()
    full = make_patch_grid(open_slide(slide), patch_size=64, tissue_threshold=0.0, mask=mask)
    assert len(full) == (1024 // 64) * (768 // 64)


def test_coords_file_roundtrip_and_refusal(tmp_path, slide):
    with open_slide(slide) as r:
        g = make_patch_grid(r, patch_size=64)
        preview = render_patch_grid(r, g, mask=compute_tissue_mask(r), max_size=200)
    assert preview.size == (200, 150)
    path = save_patch_grid(tmp_path / "c" / "s.safetensors", g)
    back = load_patch_grid(path)
    np.testing.assert_array_equal(back.coords, g.coords)
    assert back.settings() == g.settings() and back.metadata["reader"] == "openslide"
    assert back.matches(patch_size=64, target_mpp=0.5) and not back.matches(patch_size=224)
    assert not list(path.parent.glob(".*.tmp"))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a reportkd coordinates file"):
        load_patch_grid(tmp_path / "other.safetensors")


def test_patch_dataset_reads_in_workers_with_their_own_handles(slide):
    with open_slide(slide) as r:
        g = make_patch_grid(r, patch_size=32, target_mpp=1.0)  # read at level 1
    ds = PatchDataset.from_grid(slide, g)
    assert ds.backend == "openslide" and len(ds) == len(g)
    x0, i0 = ds[0]
    assert x0.shape == (3, 32, 32) and i0 == 0 and 0 <= x0.min() and x0.max() <= 1
    batches = list(make_patch_loader(ds, batch_size=8, num_workers=2))
    got = torch.cat([b[0] for b in batches])
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(len(ds)))
    assert torch.equal(got[0], x0)  # same pixels from the worker processes


@pytest.mark.shared_data("wsi")
def test_real_slides_mpp_and_fallback_reader(shared_data_dir):
    wsi = shared_data_dir / "wsi"
    with open_slide(wsi / "cmu-1-small-region.svs") as r:
        assert r.backend == "openslide" and r.mpp == pytest.approx(0.499) and r.magnification == 20
        g = make_patch_grid(r)
    assert 20 < len(g) < 117 and g.level == 0 and g.patch_size_level0 == 224
    with open_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs") as r:
        assert r.level_count == 2 and r.mpp is None
        with pytest.raises(MissingMPPError, match="--mpp"):
            make_patch_grid(r)
    with open_slide(wsi / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.25) as r:  # 0.5 µm/px is level 1 here
        g = make_patch_grid(r)
    assert (g.level, g.read_size, g.patch_size_level0) == (1, 224, 448)
    with open_slide(wsi / "kidney-48-5.tif") as r:  # plain TIFF: OpenSlide refuses it, tiffslide reads it
        assert r.backend == "tiffslide" and "openslide" in r.fallback_reasons[0] and r.mpp is None
