"""``benchmarks/patch_distill.py``: every variant builds a valid config at its budget (the ``*_long`` ones at
``--long-factor`` x the steps, the single-expert ones with one expert), and the issue-16 variants train a step."""

import importlib.util
import types
from pathlib import Path

import pytest
import torch

from reportkd.vlm.patch.data import morphology_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("patch_distill_bench", ROOT / "benchmarks" / "patch_distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def opts(**kw) -> types.SimpleNamespace:
    base = dict(student=(16, 1, 2), steps=4, long_factor=3, batch=8, lr=1e-3, strong_hed=0.2)
    return types.SimpleNamespace(**{**base, **kw})


def test_every_variant_builds_its_config(bench, tmp_path):
    for name, spec in bench.VARIANTS.items():
        if spec is None:
            continue
        args, names, collator = bench.student_setup(name, opts(), 0, 16, str(tmp_path))
        assert args.max_steps == (12 if name.endswith("_long") else 4), name
        assert names == ([name[3]] if name.startswith("kd_") else None), name
        assert collator.clean_teacher_views == ("hed_clean" in name), name
    args, _, collator = bench.student_setup("dino_ibot_relation_hed_clean_long", opts(), 0, 16, str(tmp_path))
    assert args.dino_weight == args.ibot_weight == args.relation_sample_weight == args.relation_region_weight == 1
    assert args.feature_weight == 0 and collator.num_local == 2 and collator.mask_ratio == 0.3
    args, *_ = bench.student_setup("dino_ibot_soft_hed_clean", opts(), 0, 16, str(tmp_path))
    assert (args.dino_out_dim, args.teacher_temperature) == (512, 0.1)
    args, *_ = bench.student_setup("multi_relation_favA_long", opts(), 0, 16, str(tmp_path))
    assert args.expert_weights == {"A": 2.0, "B": 1.0} and args.relation_region_weight == 1


@pytest.mark.parametrize("variant", ["multi_relation_favA", "dino_ibot_relation_hed_clean", "kd_B_long"])
def test_issue16_variants_train(bench, variant):
    torch.manual_seed(0)
    experts = {n: bench.vit(16, 24, 1, 2).eval().requires_grad_(False) for n in ("A", "B")}
    data = bench.TileDataset(morphology_dataset(16, image_size=16, seed=0).tiles)
    student = bench.train_student(variant, experts, data, opts(steps=2, long_factor=2), 0, 16)
    torch.manual_seed(0)
    before = bench.vit(16, 16, 1, 2)  # the same seed's untrained student
    moved = [not torch.equal(a, b) for a, b in zip(student.state_dict().values(), before.state_dict().values())]
    assert any(moved) and not student.training
