"""SKDConfig options reproducing the official SKD code: loss positions, averaging, seq_kd loss, sampling defaults."""

import copy

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from test_skd_trainer import assert_same_params, lm, make_args, train

from reportkd.synthetic import generate_reports
from reportkd.text.skd import SKDTrainer
from reportkd.text.skd.models import train_bpe_tokenizer
from reportkd.text.skd.trainer import average_loss, official_loss_labels


@pytest.fixture(scope="module")
def corpus():
    records = generate_reports(24, seed=0)
    rows = [
        {
            "prompt": r["text"][-160:] + "\nsynoptic:",
            "completion": " " + " | ".join(r["synoptic"].split(" | ")[: 1 + i % 3]),
        }
        for i, r in enumerate(records)
    ]  # completions of 1-3 fields: ragged lengths
    tokenizer = train_bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=300)
    return Dataset.from_list(rows), tokenizer


def test_official_loss_labels_drop_the_first_token_and_add_one_past_the_end():
    labels = torch.tensor([[5, 6, 7, -100], [5, -100, -100, -100], [5, 6, 7, 8]])
    keep = official_loss_labels(labels) != -100
    assert keep.shape == (3, 5)
    assert keep.tolist() == [
        [False, True, True, True, False],  # 3 tokens: positions 1, 2 and 3 (after the last token)
        [False, True, False, False, False],  # 1 token: only the position after it
        [False, True, True, True, True],  # full width: the extra column past the batch's last one
    ]


def full_logits(model, batch):
    mask = batch["attention_mask"]
    return model(input_ids=batch["input_ids"], attention_mask=mask,
                 position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits.double()  # fmt: skip


def forward_kl(student, teacher):
    return (teacher.softmax(-1) * (teacher.log_softmax(-1) - student.log_softmax(-1))).sum(-1)


@pytest.mark.parametrize("positions", ["completion", "official"])
@pytest.mark.parametrize("averaging", ["token", "sequence"])
def test_loss_positions_and_averaging_select_what_they_claim(tmp_path, corpus, positions, averaging):
    data, tok = corpus
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    args = make_args(tmp_path, mode="supervised_kd", loss_positions=positions, averaging=averaging)
    trainer = SKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=tok)
    batch = trainer.data_collator([data[i] for i in range(6)])
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        kl = forward_kl(full_logits(student, batch), full_logits(teacher, batch))  # (B, L): position i predicts i+1
    first = batch["prompt_input_ids"].shape[1]  # column of completion token 0, predicted at column first - 1
    lengths = (batch["labels"][:, first:] != -100).sum(-1).tolist()
    rows = []
    for b, n in enumerate(lengths):
        # completion tokens 0..n-1, or (official) 1..n: token n is the prediction after the last one
        tokens = range(n) if positions == "completion" else range(1, n + 1)
        rows.append([float(kl[b, first - 1 + p]) for p in tokens if first - 1 + p < kl.shape[1]])
    if positions == "official":  # rows filling the batch width need the column past it: computed by the trainer
        assert max(lengths) == batch["labels"].shape[1] - first
        rows = [r for r, n in zip(rows, lengths) if n < max(lengths)]
        batch = {k: v[[i for i, n in enumerate(lengths) if n < max(lengths)]] for k, v in batch.items()}
        loss = trainer.compute_loss(student, batch)
    if averaging == "token":
        expected = sum(map(sum, rows)) / sum(map(len, rows))
    else:
        expected = sum(sum(r) / len(r) for r in rows) / len(rows)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)  # the losses compute in float32


def test_average_loss_sequence_weights_every_row_equally():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert float(average_loss(per_token, mask, "token", None)) == pytest.approx(7 / 5)
    assert float(average_loss(per_token, mask, "sequence", None)) == pytest.approx(2.0)
    assert float(average_loss(per_token, mask, "sequence", 4)) == pytest.approx(1.0)  # a step of 4 sequences


def test_official_slicing_and_sequence_averaging_accumulate_exactly(tmp_path, corpus):
    tok = corpus[1]
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    teacher.lm_head.weight.data[tok.eos_token_id] *= 3  # sampled rows end at different lengths
    kw = dict(mode="skd", max_completion_length=40, loss_positions="official", averaging="sequence")
    big = train(tmp_path, corpus, copy.deepcopy(student), teacher, per_device_train_batch_size=8, **kw)
    small = train(tmp_path, corpus, copy.deepcopy(student), teacher, per_device_train_batch_size=2,
                  gradient_accumulation_steps=4, **kw)  # fmt: skip
    assert_same_params(big.model, small.model, rtol=1e-9, atol=1e-10)


def test_seq_kd_with_cross_entropy_trains_on_the_teachers_samples(tmp_path, corpus):
    data, tok = corpus
    student, teacher = lm(tok, 1).double(), lm(tok, 0, hidden=48, layers=2).double()
    args = make_args(tmp_path, mode="seq_kd", seq_kd_loss="cross_entropy")
    trainer = SKDTrainer(model=student, teacher_model=teacher, args=args, processing_class=tok)
    batch = trainer._sample_micro_batch(trainer.data_collator([data[i] for i in range(4)]))
    assert "teacher_logits" not in batch  # cross-entropy needs no teacher logits
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        logits = full_logits(student, batch)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_student_sampling_defaults_follow_the_mode(tmp_path):
    assert make_args(tmp_path, mode="on_policy").student_sampling() == (1.0, 1.0)  # GKD
    assert make_args(tmp_path, mode="skd").student_sampling() == (0.5, 0.5)  # official SKD recipe
    assert make_args(tmp_path, mode="on_policy", student_temperature=0.5).student_sampling() == (0.5, 1.0)
    assert make_args(tmp_path).acceptance == "filtered_top_k"


@pytest.mark.parametrize(
    "bad", [{"acceptance": "top_k"}, {"loss_positions": "shifted"}, {"averaging": "prompt"}, {"seq_kd_loss": "ce"}]
)
def test_new_options_are_validated(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_args(tmp_path, **bad)
