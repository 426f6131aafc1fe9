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


def test_sharded_benchmark_reports_the_slower_process_and_checks_samples():
    spec = importlib.util.spec_from_file_location("skd_sharded", ROOT / "benchmarks" / "skd_sharded.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def rec(batch, mode, arm, seconds, same=True):
        return {"batch": batch, "mode": mode, "arm": arm, "seconds": seconds, "teacher_forwards": 3, "tokens": 5,
                "same_samples": same}  # fmt: skip

    ranks = [[rec(b, m, a, 1.0 + b) for b in range(3) for m in bench.MODES for a in bench.ARMS] for _ in range(2)]
    ranks[1][0]["seconds"] = 9.0  # batch 0, skd, replicated: process 1 is the slower one
    ranks[1][-1]["same_samples"] = False  # seq_kd, sharded: one batch differs
    memory = [{"replicated": 8, "sharded": 4}] * 2
    summary = bench.summarize(ranks, memory)
    assert summary["skd"]["replicated"]["seconds_range"] == [2.0, 9.0]  # max over processes, per batch
    assert summary["skd"]["replicated"]["seconds_median"] == 3.0
    assert summary["skd"]["sharded"]["teacher_bytes_per_process"] == [4, 4]
    assert summary["skd"]["sharded"]["teacher_forwards_per_process"] == [9, 9]
    assert summary["seq_kd"]["sharded"]["same_samples_as_replicated"] is False
    assert summary["seq_kd"]["replicated"]["same_samples_as_replicated"] is True
    assert "| skd | sharded |" in bench.format_table(summary)
