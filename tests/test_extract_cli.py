"""``reportkd extract`` end to end: synthetic slides, exit codes, the µm/px message, and the real slides."""

import json
from pathlib import Path

import pytest

from reportkd.cli import main
from reportkd.vlm.wsi import load_slide_features, write_synthetic_slide

FAST = ["--encoder", "random-tiny-cnn", "--num-workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("slides")
    for i in range(2):
        write_synthetic_slide(d / f"s{i}.tif", size=(512, 512), levels=2, seed=i)
    (d / "notes.txt").write_text("not a slide")
    return d


def test_extract_folder_then_resume(tmp_path, slide_dir, capsys):
    out = tmp_path / "out"
    assert main(["extract", str(slide_dir), "--out", str(out), "--patch-size", "64", *FAST]) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text and "slides: done 2" in text
    assert sorted(p.name for p in (out / "features").iterdir()) == ["s0.safetensors", "s1.safetensors"]
    assert load_slide_features(out / "features" / "s0.safetensors").features.shape[1] == 64
    assert main(["extract", "--slides-dir", str(slide_dir), "--out", str(out), "--patch-size", "64", *FAST]) == 0
    assert "slides: skipped 2" in capsys.readouterr().out
    summary = json.loads((out / "extract_summary.json").read_text())
    assert summary["counts"]["skipped"] == 2 and summary["settings"]["encoder"] == "random-tiny-cnn"


def test_missing_mpp_message_strict_and_slide_list(tmp_path, slide_dir, capsys):
    from PIL import Image

    plain = tmp_path / "plain.tif"
    Image.open(slide_dir / "s0.tif").convert("RGB").save(plain)  # no resolution tags
    args = ["extract", str(plain), str(slide_dir / "s1.tif"), "--out", str(tmp_path / "o"), "--patch-size", "64"]
    assert main([*args, *FAST]) == 0
    text = capsys.readouterr().out
    assert "needs_mpp" in text and "rerun with --mpp" in text
    assert main([*args, *FAST, "--strict"]) == 1
    capsys.readouterr()
    listing = tmp_path / "slides.csv"
    listing.write_text("path,mpp\n# per-slide µm/px\nplain.tif,0.5\n")
    assert main(["extract", "--slide-list", str(listing), "--out", str(tmp_path / "o"), "--patch-size", "64",
                 *FAST, "--strict"]) == 0  # fmt: skip
    assert "0.5 (user)" in capsys.readouterr().out


def test_usage_errors_and_listing(tmp_path, capsys):
    assert main(["extract", "--list-encoders"]) == 0
    assert "uni_v1" in capsys.readouterr().out
    assert main(["extract", str(tmp_path / "nope"), "--out", str(tmp_path), *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "o"), "--encoder", "nope"]) == 2
    assert main(["extract", str(tmp_path), "--out", str(tmp_path / "o"), *FAST]) == 2  # folder without slides
    assert "No slide files" in capsys.readouterr().err


@pytest.mark.shared_data("wsi")
def test_real_slides_both_svs_done_plain_tiff_reported(tmp_path, capsys, shared_data_dir):
    wsi = shared_data_dir / "wsi"
    out = tmp_path / "real"
    fast = [*FAST, "--target-mpp", "2.0", "--patch-size", "112"]  # 5x: fewer patches, TCGA read from level 1
    assert main(["extract", str(wsi), "--out", str(out), *fast]) == 0
    first = json.loads((out / "extract_summary.json").read_text())["slides"]
    status = {r["slide_id"]: r for r in first}
    assert status["cmu-1-small-region"]["status"] == "done" and status["cmu-1-small-region"]["reader"] == "openslide"
    assert status["tcga-cr-7395-01a-01-ts1"]["status"] == "needs_mpp"
    kidney = status["kidney-48-5"]
    assert kidney["status"] == "needs_mpp" and kidney["reader"] == "tiffslide" and "openslide" in kidney["reader_note"]
    cmu_mtime = (out / "features" / "cmu-1-small-region.safetensors").stat().st_mtime_ns
    assert main(["extract", str(wsi), "--out", str(out), *fast, "--mpp", "0.5"]) == 0
    status = {r["slide_id"]: r for r in json.loads((out / "extract_summary.json").read_text())["slides"]}
    assert status["cmu-1-small-region"]["status"] == "skipped"  # its own 0.499 µm/px: --mpp does not apply
    assert status["tcga-cr-7395-01a-01-ts1"]["status"] == "done" and status["tcga-cr-7395-01a-01-ts1"]["num_patches"]
    assert status["kidney-48-5"]["status"] in ("done", "no_tissue")
    assert (out / "features" / "cmu-1-small-region.safetensors").stat().st_mtime_ns == cmu_mtime


def test_no_slide_extracted_exits_1_and_no_tissue_is_not_a_success(tmp_path, slide_dir, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    write_synthetic_slide(d / "blank.tif", size=(512, 512), levels=2, tissue=0.0)  # glass only
    (d / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)  # a TIFF header, then garbage
    args = ["--out", str(tmp_path / "o"), "--patch-size", "64", *FAST]
    assert main(["extract", str(d), *args]) == 1
    captured = capsys.readouterr()
    assert "0 of 2 slide(s) succeeded (done 0, skipped 0); failed 1, no tissue 1" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("reportkd extract: error:")]
    assert len(errors) == 1 and captured.err.rstrip().endswith(errors[0])
    assert "no slide was extracted (failed 1, no tissue 1, need µm/px 0)" in errors[0] and "extract.log" in errors[0]
    counts = json.loads((tmp_path / "o" / "extract_summary.json").read_text())["counts"]
    assert counts["no_tissue"] == 1 and counts["failed"] == 1 and counts["done"] == 0
    # One real slide succeeding is enough; the no-tissue slide is still reported as such.
    assert main(["extract", str(d / "blank.tif"), str(slide_dir / "s0.tif"), *args]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 slide(s) succeeded (done 1, skipped 0); failed 0, no tissue 1" in captured.out
    assert "error" not in captured.err
    assert main(["extract", str(d / "blank.tif"), str(slide_dir / "s0.tif"), *args]) == 0  # resumed: s0 skipped
    assert "1 of 2 slide(s) succeeded (done 0, skipped 1)" in capsys.readouterr().out
