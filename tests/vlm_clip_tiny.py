"""Tiny random open_clip teacher / student pairs and trainer settings for the reportkd.vlm.clip tests."""

import copy

import torch

from reportkd.vlm.clip.models import load_open_clip
from reportkd.vlm.clip.trainer import CLIPDistillationConfig
from reportkd.vlm.synthetic_tiles import SyntheticHistology

STUDENT, TEACHER = "reportkd-clip-tiny-student", "reportkd-clip-tiny-teacher"


def bundles(seed=0, student=STUDENT, teacher=TEACHER):
    torch.manual_seed(seed)
    s = load_open_clip(student)
    torch.manual_seed(seed + 1)
    t = load_open_clip(teacher) if teacher else None
    return s, t


def clone(model):
    return copy.deepcopy(model)


def tiny_data(n=16, size=32, seed=0):
    return SyntheticHistology(n, image_size=size, seed=seed)


def make_args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        per_device_train_batch_size=8,
        max_steps=1,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        logging_steps=1,
        seed=3,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        max_grad_norm=0.0,
    )
    base.update(kw)
    return CLIPDistillationConfig(**base)
