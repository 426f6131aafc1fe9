"""End to end on synthetic slides: slide-report alignment, distillation, cross-magnification (XMAG) distillation;
save / load of slide-report models with open_clip and hf text encoders; exact gradient accumulation."""

import copy
import math

import pytest
import torch
from slide_tiny import tiny_aligned, tiny_encoder, trainer_args

from reportkd.vlm.slide.alignment import TEXT_ENCODERS, SlideReportModel, load_slide_model, load_text_encoder
from reportkd.vlm.slide.data import SlideCollator, synthetic_dataset
from reportkd.vlm.slide.evaluation import encode_slides, label_retrieval_metrics
from reportkd.vlm.slide.trainer import (
    SlideAlignmentConfig,
    SlideAlignmentTrainer,
    SlideDistillationConfig,
    SlideDistillationTrainer,
)


def retrieval_map(model, grid="fine"):
    """Label retrieval mAP@5 of held-out synthetic slides: first half queries the second half."""
    ds = synthetic_dataset("n=48,seed=1000", grid=grid)
    emb = encode_slides(model, [ds.slide_features(i) for i in range(48)], batch_size=16)["slide_embeds"]
    y = torch.tensor([ds[i]["label"] for i in range(48)])
    return label_retrieval_metrics(emb[:24], y[:24], emb[24:], y[24:], ks=(5,))["map@5"]


def losses(trainer, key="loss"):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.fixture(scope="module")
def teacher():
    """A slide encoder trained with class labels on the fine grid (a strong, quickly trained teacher)."""
    torch.set_num_threads(1)
    model, head = tiny_encoder(seed=5), torch.nn.Linear(32, 4)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)
    data = synthetic_dataset("n=96,seed=0")
    collate, g = SlideCollator(crop_size=8), torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = collate([data[i] for i in torch.randint(96, (16,), generator=g).tolist()])
        out = model(batch["features"], batch["grid"], batch["patch_mask"])
        loss = torch.nn.functional.cross_entropy(head(out.slide_embeds), batch["class_labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def aligned_teacher(tmp_path_factory):
    """A slide-report model aligned briefly (slide-report KD and the aligned export)."""
    torch.set_num_threads(1)
    model = tiny_aligned(seed=5, pooling="mean", init_logit_scale=math.log(5.0))
    args = trainer_args(
        SlideAlignmentConfig, tmp_path_factory.mktemp("teacher"), max_steps=100, logging_steps=20, learning_rate=3e-3
    )
    trainer = SlideAlignmentTrainer(
        model=model,
        args=args,
        train_dataset=synthetic_dataset("n=96,seed=0"),
        data_collator=SlideCollator(tokenize=model.tokenize, crop_size=8),
    )
    trainer.train()
    model.curve = losses(trainer, "loss_contrastive")
    return model.eval()


def test_alignment_learns_and_the_model_round_trips(tmp_path, aligned_teacher):
    assert aligned_teacher.curve[-1] < aligned_teacher.curve[0] - 0.3
    before = retrieval_map(tiny_aligned(seed=5, pooling="mean"))
    after = retrieval_map(aligned_teacher)
    assert after > before + 0.2, (before, after)
    model = tiny_aligned(seed=2)
    args = trainer_args(SlideAlignmentConfig, tmp_path, max_steps=3, logging_steps=1, freeze_text_encoder=True)
    trainer = SlideAlignmentTrainer(
        model=model,
        args=args,
        train_dataset=synthetic_dataset("n=32,seed=0"),
        data_collator=SlideCollator(tokenize=model.tokenize, crop_size=8),
    )
    text_before = copy.deepcopy(model.text_encoder.state_dict())
    slide_before = copy.deepcopy(model.slide_encoder.state_dict())
    trainer.train()
    assert all(torch.equal(v, model.text_encoder.state_dict()[k]) for k, v in text_before.items())
    assert any(not torch.equal(v, model.slide_encoder.state_dict()[k]) for k, v in slide_before.items())
    trainer.save_aligned(tmp_path / "aligned", model_card="# card\n")
    loaded = load_slide_model(tmp_path / "aligned")
    assert isinstance(loaded, SlideReportModel) and (tmp_path / "aligned" / "README.md").read_text() == "# card\n"
    batch = SlideCollator(tokenize=model.tokenize)([synthetic_dataset("n=4,seed=9")[i] for i in range(4)])
    batch.pop("class_labels")
    a, b = model.eval()(**batch), loaded.eval()(**batch)
    for key in ("slide_features", "text_features", "logit_scale"):
        assert torch.equal(a[key], b[key]), key


def test_hf_text_encoder_round_trip(tmp_path):
    from transformers import BertConfig, BertModel

    from reportkd.text.mtcnn.tokenization import train_word_tokenizer

    reports = [synthetic_dataset("n=32,seed=0")[i]["report"] for i in range(32)]
    tokenizer = train_word_tokenizer(reports, min_count=1, max_length=64)
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    )
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    text = load_text_encoder(f"hf:{tmp_path / 'bert'}", pooling="cls")
    model = SlideReportModel(tiny_encoder(), text, embed_dim=8).eval()
    model.save_pretrained(tmp_path / "aligned")
    loaded = SlideReportModel.from_pretrained(tmp_path / "aligned").eval()
    assert loaded.text_encoder.backend == "hf" and loaded.text_encoder.pooling == "cls"
    tokens = model.tokenize(reports[:3])
    assert torch.equal(model.encode_text(tokens), loaded.encode_text(loaded.tokenize(reports[:3])))
    with pytest.raises(KeyError, match="text encoder backend"):
        TEXT_ENCODERS.get("nope")


def test_distillation_student_beats_an_untrained_student(tmp_path, teacher):
    args = trainer_args(SlideDistillationConfig, tmp_path, max_steps=150, logging_steps=50, learning_rate=3e-3)
    trainer = SlideDistillationTrainer(
        model=tiny_encoder(seed=7, hidden_size=16),
        teacher_model=teacher,
        args=args,
        train_dataset=synthetic_dataset("n=64,seed=0"),
        data_collator=SlideCollator(crop_size=8),
    )
    trainer.train()
    assert losses(trainer)[-1] < losses(trainer)[0]
    before, after = retrieval_map(tiny_encoder(seed=7, hidden_size=16)), retrieval_map(trainer.model.student)
    assert after > before + 0.3 and after > 0.8, (before, after)
    trainer.save_student(tmp_path / "student", model_card="# student\n")
    assert type(load_slide_model(tmp_path / "student")).__name__ == "SlideEncoderModel"


def test_slide_report_distillation_exports_an_aligned_student(tmp_path, aligned_teacher):
    args = trainer_args(SlideDistillationConfig, tmp_path, max_steps=20, logging_steps=5, similarity_kind="both")
    trainer = SlideDistillationTrainer(
        model=tiny_encoder(seed=7, hidden_size=16),
        teacher_model=aligned_teacher,
        args=args,
        train_dataset=synthetic_dataset("n=32,seed=0"),
        data_collator=SlideCollator(tokenize=aligned_teacher.tokenize, crop_size=8),
    )
    trainer.train()
    curve = losses(trainer, "loss_slide_report")
    assert curve[-1] < curve[0]
    trainer.save_student(tmp_path / "student", aligned=True)
    loaded = load_slide_model(tmp_path / "student")
    assert isinstance(loaded, SlideReportModel) and loaded.slide_encoder.config.hidden_size == 16
    torch.testing.assert_close(loaded.text_projection.weight, aligned_teacher.text_projection.weight)
    torch.testing.assert_close(loaded.slide_projection.weight, trainer.model.joint_projection.weight)
    with pytest.raises(ValueError, match="slide_report"):
        SlideDistillationTrainer(
            model=tiny_encoder(), teacher_model=aligned_teacher, args=trainer_args(SlideDistillationConfig, tmp_path)
        ).save_student(tmp_path / "x", aligned=True)


def test_xmag_student_on_the_coarse_grid_learns_from_the_fine_teacher(tmp_path, teacher):
    data = synthetic_dataset("n=64,seed=0", grid="coarse", teacher_grid="fine")
    args = trainer_args(
        SlideDistillationConfig, tmp_path, max_steps=150, logging_steps=50, learning_rate=3e-3, token_weight=1.0
    )
    student = tiny_encoder(seed=8, hidden_size=16)
    trainer = SlideDistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, data_collator=SlideCollator(crop_size=4)
    )
    trainer.train()
    for key in ("loss", "loss_token", "loss_feature", "loss_similarity"):
        assert losses(trainer, key)[-1] < losses(trainer, key)[0], key
    before = retrieval_map(tiny_encoder(seed=8, hidden_size=16), grid="coarse")
    after = retrieval_map(trainer.model.student, grid="coarse")  # 4x fewer patches than the teacher reads
    assert after > before + 0.2 and after > 0.45, (before, after)


def test_gradient_accumulation_matches_one_large_batch_for_per_slide_terms(tmp_path, teacher):
    data = synthetic_dataset("n=8,seed=0", grid="coarse", teacher_grid="fine")

    def one_step(**kw):
        args = trainer_args(
            SlideDistillationConfig,
            tmp_path,
            optim="sgd",
            learning_rate=0.5,
            similarity_weight=0.0,
            token_weight=1.0,
            feature_kind="mse",
            **kw,
        )
        trainer = SlideDistillationTrainer(
            model=tiny_encoder(seed=1, hidden_size=16),
            teacher_model=teacher,
            args=args,
            train_dataset=data,
            data_collator=SlideCollator(),
        )
        trainer.train()
        return dict(trainer.model.named_parameters())

    big = one_step(per_device_train_batch_size=8)
    small = one_step(per_device_train_batch_size=4, gradient_accumulation_steps=2)
    moved = False
    for name, p in big.items():
        torch.testing.assert_close(p, small[name], rtol=1e-4, atol=1e-6, msg=name)
        moved |= not torch.equal(
            p, dict(tiny_encoder(seed=1, hidden_size=16).named_parameters()).get(name.removeprefix("student."), p)
        )
    assert moved
