"""A saved slide-report model pushes as the ``slide_encoder`` kind (detected without importing reportkd.vlm.slide
first), with its text encoder, and loads back from the local hub with identical outputs."""

import subprocess
import sys

import torch
from slide_tiny import batch_of, random_slide, tiny_aligned
from transformers import AutoModel

from reportkd.hub import push_to_hub
from reportkd.vlm.slide.alignment import load_slide_model


def test_slide_report_model_round_trips_through_the_local_hub(tmp_path):
    model = tiny_aligned().eval()
    folder = model.save_pretrained(tmp_path / "model")
    # a fresh interpreter: `reportkd push` must recognise the folder without the slide code imported beforehand
    out = subprocess.run(
        [sys.executable, "-m", "reportkd.cli", "push", str(folder), "--repo-id", "org/slide", "--dry-run"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "(slide_encoder)" in out and "text_encoder/" in out
    result = push_to_hub(folder, "org/slide", local_hub=tmp_path / "hub")
    repo = tmp_path / "hub" / "org" / "slide"
    assert any(f.startswith("text_encoder/") for f in result.files)
    card = (repo / "README.md").read_text()
    assert "Not a medical device" in card and "2D ALiBi" in card
    batch = batch_of([random_slide(12, seed=1), random_slide(7, seed=2)])
    features, grid, mask = batch["features"], batch["grid"], batch["patch_mask"]
    loaded = load_slide_model(repo).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_slide(features, grid, mask), model.encode_slide(features, grid, mask))
        encoder = AutoModel.from_pretrained(repo).eval()
        torch.testing.assert_close(
            encoder(features, grid, mask).slide_embeds, model.slide_encoder(features, grid, mask).slide_embeds
        )
