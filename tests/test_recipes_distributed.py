"""Recipes under ``accelerate launch`` with 2 processes give the single-process result at the same global batch.

Two CPU processes: ``accelerate launch --multi_gpu --num_processes 2`` with CUDA hidden (torchrun + gloo) and
``use_cpu: true`` in the config (``accelerate launch --cpu --num_processes 2`` starts a single process in this
accelerate version). The single-process run uses ``per_device_train_batch_size`` B, the 2-process run B / 2.

MtCNN: the whole recipe (teacher ensemble with out-of-fold member masks → soft labels → student) matches without
dropout: every member's loss is normalised by its labelled reports over all processes.
CLIP: teacher trained from scratch, then distilled, with SGD
(AdamW's normalisation by tiny second moments amplifies float reordering to ~1e-4).
"""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


def run_single(script: str, argv: list[str], monkeypatch) -> None:
    """The recipe as `python recipes/<script> ...`, in this process (one interpreter start less)."""
    environ, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(sys, "argv", [str(RECIPES / script), *argv])
    try:
        runpy.run_path(str(RECIPES / script), run_name="__main__")
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)


def run_two(script: str, argv: list[str], cwd: Path) -> str:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([*LAUNCH, str(RECIPES / script), *argv], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=atol, msg=key)


@pytest.mark.slow
def test_mtcnn_recipe_two_processes_match_one(tmp_path, monkeypatch):
    config = str(RECIPES / "configs" / "mtcnn_distill_quick.yaml")
    # 192 training reports: 6 global batches of 32 per epoch, none ragged
    # progress bars on: the log shows the steps each process took
    common = ["--config", config, "--data", "synthetic:n=320,seed=0", "--folds", "2", "--train_baseline", "false",
              "--train_dac", "false", "--disable_tqdm", "false"]  # fmt: skip
    run_single("mtcnn_distill.py", [*common, "--output_dir", str(tmp_path / "one"),
                                    "--per_device_train_batch_size", "32"], monkeypatch)  # fmt: skip
    log = run_two("mtcnn_distill.py", [*common, "--output_dir", str(tmp_path / "two"),
                                       "--per_device_train_batch_size", "16"], tmp_path)  # fmt: skip
    assert "24/24" in log and "48/48" not in log  # ensemble and student: 6 steps x 4 epochs in each process
    one, two = tmp_path / "one", tmp_path / "two"
    assert_same_weights(one / "soft_labels.safetensors", two / "soft_labels.safetensors", atol=1e-5)
    assert_same_weights(one / "student" / "model.safetensors", two / "student" / "model.safetensors", atol=1e-5)
    assert sorted(p.name for p in (two / "student").iterdir()) == sorted(p.name for p in (one / "student").iterdir())


@pytest.mark.slow
def test_clip_recipe_two_processes_match_one(tmp_path, monkeypatch):
    config = str(RECIPES / "configs" / "clip_distill_quick.yaml")
    common = ["--config", config, "--optim", "sgd", "--learning_rate", "0.05", "--eval_data",
              "synthetic:n=16,size=32,seed=1000"]  # fmt: skip
    run_single("clip_distill.py", [*common, "--output_dir", str(tmp_path / "one"),
                                   "--per_device_train_batch_size", "16"], monkeypatch)  # fmt: skip
    run_two("clip_distill.py", [*common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "8"],
            tmp_path)  # fmt: skip
    for folder in ("teacher/model", "student"):
        assert_same_weights(tmp_path / "one" / folder / "open_clip_model.safetensors",
                            tmp_path / "two" / folder / "open_clip_model.safetensors", atol=1e-6)  # fmt: skip
