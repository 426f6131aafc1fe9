"""The ``patch_distill`` recipe: a run stopped at a checkpoint and resumed ends with the uninterrupted run's weights
(offline experts reused, not retrained); the saved student is a complete ``patch_encoder`` folder."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reportkd.hub import plan_upload
from reportkd.recipes import load_recipe

CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "patch_distill_quick.yaml"


def _run(argv: list[str]) -> dict:
    env = dict(os.environ)
    try:
        return load_recipe("patch_distill")(argv)
    finally:
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(1)


def test_resumed_run_ends_with_the_uninterrupted_weights_and_reuses_the_experts(tmp_path, monkeypatch, capsys):
    common = ["--config", str(CONFIG), "--eval_train", "", "--max_steps", "4", "--save_strategy", "steps",
              "--save_steps", "2", "--self_distill_weight", "0.5", "--num_global", "2",
              "--global_scale_min", "0.6"]  # fmt: skip
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    result = _run([*common, "--output_dir", str(full)])
    assert (full / "checkpoint-2").is_dir() and (full / "student" / "model.safetensors").is_file()
    assert len(result["teachers"]) == 2
    plan = plan_upload(full / "student", "org/student")
    assert plan.kind == "patch_encoder" and "## Training data" in plan.card.text

    shutil.copytree(full / "experts", resumed / "experts")
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run reuses the saved experts")

    monkeypatch.setattr("reportkd.vlm.patch.recipe.train_expert", no_training)
    _run([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "last"])
    a, b = (
        load_file(str(full / "student" / "model.safetensors")),
        load_file(str(resumed / "student" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    with pytest.raises(ValueError, match="not empty.*--overwrite_output_dir"):
        _run([*common, "--output_dir", str(full)])
