"""Tiny slide encoders, synthetic slides and trainer settings for the reportkd.vlm.slide tests."""

import math

import torch

from reportkd.vlm.slide import SlideEncoderConfig, SlideEncoderModel
from reportkd.vlm.slide.alignment import SlideReportModel, load_text_encoder
from reportkd.vlm.slide.data import pad_slides

TEXT = "open_clip:reportkd-clip-tiny-student"
CLIP_LOGIT_SCALE = math.log(1 / 0.07)


def tiny_encoder(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(input_dim=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    cfg.update(kw)
    return SlideEncoderModel(SlideEncoderConfig(**cfg))


def tiny_aligned(seed=0, init_logit_scale=CLIP_LOGIT_SCALE, **kw):
    enc = tiny_encoder(seed, **kw)
    torch.manual_seed(seed + 1)
    return SlideReportModel(enc, load_text_encoder(TEXT), embed_dim=16, init_logit_scale=init_logit_scale)


def random_slide(n, dim=32, side=10, seed=0):
    """``n`` patches at distinct random cells of a ``side`` x ``side`` grid."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(side * side, generator=g)[:n]
    grid = torch.stack([cells % side, cells // side], -1)
    return torch.randn(n, dim, generator=g), grid


def batch_of(slides):
    return pad_slides([f for f, _ in slides], [g for _, g in slides])


def trainer_args(cls, tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        per_device_train_batch_size=16,
        max_steps=1,
        learning_rate=1e-3,
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
    return cls(**base)


def tiny_bert_text_encoder(save_dir, seed=0):
    """A 1-layer BERT with a word-level tokenizer trained on synthetic reports, saved to and loaded from a folder."""
    from transformers import BertConfig, BertModel

    from reportkd.text.mtcnn.tokenization import train_word_tokenizer
    from reportkd.vlm.slide.synthetic import make_synthetic_slides

    reports = [s.report for s in make_synthetic_slides(64, seed=123)]
    tokenizer = train_word_tokenizer(reports, min_count=1, max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return load_text_encoder(f"hf:{save_dir}", pooling="mean")
