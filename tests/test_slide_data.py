"""Synthetic slides, features folders, labels files and the slide collator (padding, crops, XMAG cell mapping)."""

import json

import pytest
import torch

from reportkd.vlm.slide.data import (
    SlideCollator,
    SlideDataset,
    load_slide_dataset,
    read_slide_labels,
    synthetic_dataset,
)
from reportkd.vlm.slide.synthetic import SyntheticSlideWorld, make_synthetic_slides, write_synthetic_slides
from reportkd.vlm.wsi.features import load_slide_features


def test_synthetic_slides_are_ragged_with_holes_and_a_4x_coarser_grid():
    slides = make_synthetic_slides(24, seed=0)
    sizes = {s.fine.features.shape[0] for s in slides}
    assert len(sizes) > 10  # ragged
    for s in slides:
        g = s.fine.grid
        h, w = (g.max(0).values + 1).tolist()
        assert s.fine.features.shape[0] < h * w  # background cells are missing
        assert s.coarse.patch_size_level0 == 2 * s.fine.patch_size_level0
        ratio = s.fine.features.shape[0] / s.coarse.features.shape[0]
        assert 1.5 < ratio <= 4.0
        assert s.class_name in s.report
        cells = torch.div(s.fine.coords, s.coarse.patch_size_level0, rounding_mode="floor")
        coarse_cells = torch.div(s.coarse.coords, s.coarse.patch_size_level0, rounding_mode="floor")
        assert {tuple(c) for c in cells.tolist()} == {tuple(c) for c in coarse_cells.tolist()}
    labels = [s.label for s in slides]
    assert sorted(set(labels)) == [0, 1, 2, 3] and max(labels.count(c) for c in range(4)) == 6  # balanced
    # the world fixes the classes: two draws of one world share prototypes, other seeds differ in slides
    again = make_synthetic_slides(24, seed=0)
    assert torch.equal(again[3].coarse.features, slides[3].coarse.features)
    other = make_synthetic_slides(4, seed=1, world=SyntheticSlideWorld(num_classes=3, coarse_factor=3))
    assert all(s.coarse.patch_size_level0 == 3 * 512 and s.label < 3 for s in other)


def test_features_folder_labels_and_teacher_pairing(tmp_path):
    root = write_synthetic_slides(tmp_path / "synth", 20, seed=0)
    rows = read_slide_labels(root / "labels.csv")
    assert len(rows) == 20 and {r["split"] for r in rows} == {"train", "val", "test"} and rows[0]["report"]
    sf = load_slide_features(root / "fine" / f"{rows[0]['slide_id']}.safetensors")
    assert sf.metadata["class_name"] == rows[0]["label"]
    ds = SlideDataset.from_folder(
        root / "coarse", labels=root / "labels.csv", split="train", teacher_features_dir=root / "fine"
    )
    assert len(ds) == 12 and len(ds.classes) == 4  # classes come from every split
    item = ds[0]
    assert item["label"] >= 0 and item["report"] and item["teacher_features"].shape[0] > item["features"].shape[0]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text("\n".join(json.dumps({"slide_id": r["slide_id"], "label": r["label"]}) for r in rows[:5]))
    assert len(SlideDataset.from_folder(root / "fine", labels=jsonl)) == 5
    assert len(load_slide_dataset(str(root / "fine"))) == 20  # no labels: every file, label -100
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,diagnosis\na,b\n")
    with pytest.raises(ValueError, match="slide_id"):
        read_slide_labels(bad)
    bad.write_text("slide_id,label,split\na,b,holdout\n")
    with pytest.raises(ValueError, match="train / val / test"):
        read_slide_labels(bad)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / f"{rows[0]['slide_id']}.safetensors").write_bytes(
        (root / "fine" / f"{rows[0]['slide_id']}.safetensors").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match="19 slide.*teacher features"):
        SlideDataset.from_folder(root / "fine", labels=root / "labels.csv", teacher_features_dir=partial)
    with pytest.raises(FileNotFoundError, match="reportkd extract --out"):
        SlideDataset.from_folder(tmp_path)
    # a `reportkd extract --out` folder: features/ holds the files (safetensors or HDF5)
    from reportkd.vlm.wsi.formats import save_slide_features_h5

    out = tmp_path / "extract"
    save_slide_features_h5(out / "features" / "slide-a.h5", sf)
    ds = SlideDataset.from_folder(out)
    assert len(ds) == 1 and ds[0]["slide_id"] and torch.equal(ds[0]["features"], sf.features)


def test_collator_pads_ragged_slides_and_tokenises_reports():
    ds = synthetic_dataset("n=6,seed=0")
    items = [ds[i] for i in range(6)]
    seen = []
    batch = SlideCollator(tokenize=lambda texts: seen.extend(texts) or {"input_ids": torch.ones(len(texts), 3)})(items)
    n = max(it["features"].shape[0] for it in items)
    assert batch["features"].shape == (6, n, 32) and batch["grid"].shape == (6, n, 2)
    assert batch["patch_mask"].sum(1).tolist() == [it["features"].shape[0] for it in items]
    assert (batch["grid"][batch["patch_mask"]] >= 0).all() and batch["class_labels"].tolist() == [
        it["label"] for it in items
    ]
    assert seen == [it["report"] for it in items] and batch["input_ids"].shape == (6, 3)
    items[0]["report"] = None
    with pytest.raises(ValueError, match="report"):
        SlideCollator(tokenize=lambda t: {})(items)
    with pytest.raises(ValueError, match="crop_size"):
        SlideCollator(crop_size=0)


def test_crops_give_the_teacher_the_same_region_and_map_fine_patches_to_coarse_cells():
    ds = synthetic_dataset("n=8,seed=2", grid="coarse", teacher_grid="fine")
    torch.manual_seed(0)
    for i in range(8):
        item = ds[i]
        out = SlideCollator(crop_size=3, max_patches=6)._one(item)
        cells = out["cells"]
        assert len(cells) <= 6 and (cells.max(0).values - cells.min(0).values <= 2).all()
        idx = out["teacher_to_student"]
        fine_in_coarse = torch.div(out["teacher_cells"], 2, rounding_mode="floor")
        hit = idx >= 0
        assert hit.any() and torch.equal(fine_in_coarse[hit], cells[idx[hit]])
        # unmatched teacher patches fall in cells the student dropped (subsampling), never outside the crop
        kept = {tuple(c) for c in cells.tolist()}
        assert all(tuple(c) not in kept for c in fine_in_coarse[~hit].tolist())
    batch = SlideCollator(crop_size=3)([ds[i] for i in range(8)])
    pad = ~batch["teacher_patch_mask"]
    assert (batch["teacher_to_student"][pad] == -1).all() and (batch["teacher_to_student"][~pad] >= 0).all()
    assert batch["teacher_to_student"].max() < batch["features"].shape[1]


def test_synthetic_spec_options_and_errors():
    ds = load_slide_dataset("synthetic:n=9,seed=3,num_classes=3,dim=8,min_side=3,max_side=5,world_seed=7")
    assert len(ds) == 9 and ds.classes == SyntheticSlideWorld(num_classes=3).classes
    assert ds[0]["features"].shape[1] == 8
    with pytest.raises(ValueError, match="key=value"):
        synthetic_dataset("n")
    with pytest.raises(ValueError, match="grid"):
        synthetic_dataset("n=2", grid="medium")
