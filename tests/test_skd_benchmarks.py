"""benchmarks/skd_speed.py compares against TRL at its best settings (and labels its defaults as such)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_speed_benchmark():
    spec = importlib.util.spec_from_file_location("skd_speed", ROOT / "benchmarks" / "skd_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_args(**kw):
    base = dict(batch=8, warmup=1, steps=4, device="cpu", max_new_tokens=48, max_prompt_length=192)
    return argparse.Namespace(**{**base, **kw})


def test_trl_best_settings_turn_gradient_checkpointing_off_and_sample_like_on_policy(tmp_path):
    speed = load_speed_benchmark()
    best = speed.trl_config_kwargs(bench_args(), str(tmp_path))
    assert best["gradient_checkpointing"] is False  # TRL's GKD generation then keeps its KV cache
    assert best["temperature"] == 1.0 and best["max_new_tokens"] == 48 and best["lmbda"] == 1.0
    ours = dict(speed.OUR_ARMS["on_policy"][1])
    assert (ours["student_temperature"], ours["student_top_p"]) == (best["temperature"], 1.0)  # TRL: top-p 1
    defaults = speed.trl_config_kwargs(bench_args(), str(tmp_path), defaults=True)
    assert "gradient_checkpointing" not in defaults and "temperature" not in defaults  # left to TRL
    skd, baseline = speed.OUR_ARMS["skd"][1], speed.OUR_ARMS["on_policy_skd_sampling"][1]
    assert speed.OUR_ARMS["skd"][0] == "skd" and (baseline["student_temperature"], baseline["student_top_p"]) == (
        0.5,
        0.5,
    )  # SKD's cost is measured against on_policy at SKD's own (default) student sampling
    assert "student_temperature" not in skd


def test_trl_config_built_from_the_best_settings_keeps_the_kv_cache(tmp_path):
    pytest.importorskip("trl")
    from trl.experimental.gkd import GKDConfig

    speed = load_speed_benchmark()
    best = GKDConfig(**speed.trl_config_kwargs(bench_args(), str(tmp_path)))
    assert best.gradient_checkpointing is False and best.temperature == 1.0
    defaults = GKDConfig(**speed.trl_config_kwargs(bench_args(), str(tmp_path), defaults=True))
    assert defaults.gradient_checkpointing is True  # TRL's default: generation without KV cache
