"""``reportkd embed``: one embedding per slide from reportkd / TRIDENT / CLAM features files, atomic, resumable."""

import h5py
import numpy as np
import pytest
import torch
from slide_tiny import random_slide, tiny_encoder

import reportkd.vlm.slide.embed as embed_module
from reportkd.cli import main
from reportkd.vlm.slide.embed import load_slide_embeddings
from reportkd.vlm.wsi import SlideFeatures, save_slide_features

PATCH = 512


def slide(seed, n=12, dim=32):
    feats, grid = random_slide(n, dim=dim, side=6, seed=seed)
    return SlideFeatures(feats, grid * PATCH + 1024, PATCH, slide_id=f"s{seed}")


@pytest.fixture
def setup(tmp_path):
    """Four slides: two reportkd .safetensors, one TRIDENT-layout .h5, one CLAM .pt (+ its h5_files coords)."""
    feats = tmp_path / "features"
    feats.mkdir()
    slides = {f"s{i}": slide(i) for i in range(4)}
    save_slide_features(feats / "s0.safetensors", slides["s0"])
    save_slide_features(feats / "s1.safetensors", slides["s1"])
    with h5py.File(feats / "s2.h5", "w") as f:  # TRIDENT: datasets + attributes on them, nothing on the root
        f.create_dataset("features", data=slides["s2"].features.numpy()).attrs["encoder"] = "uni_v1"
        coords = f.create_dataset("coords", data=slides["s2"].coords.numpy())
        coords.attrs["patch_size_level0"] = PATCH
        coords.attrs["patch_size"] = 256
    clam = tmp_path / "clam"
    (clam / "pt_files").mkdir(parents=True)
    (clam / "h5_files").mkdir()
    torch.save(slides["s3"].features.clone(), clam / "pt_files" / "s3.pt")
    with h5py.File(clam / "h5_files" / "s3.h5", "w") as f:
        f.create_dataset("coords", data=slides["s3"].coords.numpy())
        f["coords"].attrs["patch_size"] = PATCH
        f["coords"].attrs["patch_level"] = 0
    model = tiny_encoder(seed=1).eval()
    model.save_pretrained(tmp_path / "encoder")
    return {"root": tmp_path, "feats": feats, "clam": clam / "pt_files", "slides": slides, "model": model}


def run(capsys, *argv):
    rc = main(["embed", *map(str, argv), "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def expected(model, sf):
    with torch.no_grad():
        return model(sf.features, sf.grid).slide_embeds[0].numpy()


def test_embeds_every_layout_with_a_saved_slide_encoder(setup, capsys):
    s = setup
    out = s["root"] / "slides.h5"
    rc, stdout, err = run(capsys, s["feats"], s["clam"], "--slide-encoder", s["root"] / "encoder", "--out", out)
    assert rc == 0, err
    assert "Embedded 4 slides (4 computed)" in stdout
    ids, emb, meta = load_slide_embeddings(out)
    assert ids == ["s0", "s1", "s2", "s3"] and emb.shape == (4, 32) and emb.dtype == np.float32
    for i, sid in enumerate(ids):
        np.testing.assert_allclose(emb[i], expected(s["model"], s["slides"][sid]), atol=1e-5)
    assert meta["format"] == "reportkd.slide_embeddings.v1" and meta["encoder_fingerprint"] != "unknown"
    assert not (s["root"] / "slides.h5.work").exists()  # the work folder goes once the output is written


def test_registered_mean_encoder_and_npz_output(setup, capsys):
    s = setup
    out = s["root"] / "mean.npz"
    rc, _, err = run(capsys, s["feats"], "--slide-encoder", "mean", "--out", out)
    assert rc == 0, err
    ids, emb, meta = load_slide_embeddings(out)
    assert ids == ["s0", "s1", "s2"] and meta["encoder"] == "mean"
    for i, sid in enumerate(ids):
        np.testing.assert_allclose(emb[i], s["slides"][sid].features.mean(0).numpy(), rtol=1e-6)
    rc, stdout, _ = run(capsys, "--list-slide-encoders")
    assert rc == 0 and stdout.startswith("mean")


def test_output_is_never_replaced_without_overwrite(setup, capsys):
    s = setup
    out = s["root"] / "slides.npz"
    out.write_bytes(b"precious")
    rc, _, err = run(capsys, s["feats"], "--slide-encoder", "mean", "--out", out)
    assert rc == 2 and "already exists; pass --overwrite" in err and out.read_bytes() == b"precious"
    rc, _, err = run(capsys, s["feats"], "--slide-encoder", "mean", "--out", out, "--overwrite")
    assert rc == 0, err
    assert load_slide_embeddings(out)[0] == ["s0", "s1", "s2"]


def test_a_killed_run_resumes_the_slides_it_finished(setup, capsys, monkeypatch):
    s = setup
    args = (s["feats"], s["clam"], "--slide-encoder", s["root"] / "encoder")
    rc, _, _ = run(capsys, *args, "--out", s["root"] / "reference.h5")
    assert rc == 0
    real, calls = embed_module.load_features, []

    def dies_on_the_third(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed
        return real(path)

    monkeypatch.setattr(embed_module, "load_features", dies_on_the_third)
    out = s["root"] / "slides.h5"
    rc, _, _ = run(capsys, *args, "--out", out)
    assert rc == 130 and not out.exists()  # no partial output under the final name
    assert sorted(p.name for p in (s["root"] / "slides.h5.work").glob("*.npy")) == ["s0.npy", "s1.npy"]
    monkeypatch.setattr(embed_module, "load_features", real)
    rc, stdout, err = run(capsys, *args, "--out", out)
    assert rc == 0, err
    assert "(2 computed, 2 from an interrupted run)" in stdout
    ref, got = load_slide_embeddings(s["root"] / "reference.h5"), load_slide_embeddings(out)
    assert ref[0] == got[0] and np.array_equal(ref[1], got[1])
    # work of another encoder is not mixed in
    (s["root"] / "other.npz.work").mkdir()
    (s["root"] / "other.npz.work" / "settings.json").write_text('{"encoder": "something else"}')
    rc, _, err = run(capsys, *args, "--out", s["root"] / "other.npz")
    assert rc == 2 and "unfinished work of other settings" in err


def test_bad_inputs_are_one_line_errors(setup, capsys):
    s = setup
    wide = s["root"] / "wide"
    wide.mkdir()
    save_slide_features(wide / "w.safetensors", slide(9, dim=48))
    rc, _, err = run(capsys, wide, "--slide-encoder", s["root"] / "encoder", "--out", s["root"] / "w.h5")
    assert rc == 2 and "48-d patch features" in err and "takes 32-d" in err
    rc, _, err = run(capsys, s["feats"], "--slide-encoder", "titanic", "--out", s["root"] / "x.h5")
    assert rc == 2 and "neither a registered name (mean)" in err
    rc, _, err = run(capsys, s["feats"], "--slide-encoder", "mean", "--out", s["root"] / "x.csv")
    assert rc == 2 and ".h5 or .npz" in err
    rc, _, err = run(capsys, s["root"] / "nowhere", "--slide-encoder", "mean", "--out", s["root"] / "x.h5")
    assert rc == 2 and "does not exist" in err
    for e in (err,):
        assert len([line for line in e.splitlines() if "error:" in line]) == 1
