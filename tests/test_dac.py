"""Deep Abstaining Classifier: loss identities, the alpha update, and a DAC MtCNN that abstains on label noise."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModel

import reportkd.text  # noqa: F401  (registers MtCNN)
from reportkd.data import ReportCollator
from reportkd.losses import deep_abstaining_loss, multitask_dac_loss
from reportkd.text.mtcnn import DACConfig, DACTrainer, MtCNNConfig, MtCNNForReportClassification, dac_decisions
from reportkd.text.mtcnn.dac import update_alpha


def test_dac_loss_is_cross_entropy_when_abstention_is_impossible():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 3, 1, 2, 2, 0])
    with_abstain = torch.cat([logits, torch.full((6, 1), -1e4)], dim=1)
    for alpha in (0.0, 0.5, 10.0):
        dac = deep_abstaining_loss(with_abstain, labels, alpha=alpha)
        torch.testing.assert_close(dac, F.cross_entropy(logits, labels))


def test_dac_loss_matches_the_probability_formula_and_ignores_missing_labels():
    torch.manual_seed(1)
    logits = torch.randn(5, 4)  # 3 classes + abstain
    labels = torch.tensor([0, 2, -100, 1, 0])
    alpha = 0.7
    p = logits.softmax(-1)
    keep = 1 - p[:, -1]
    rows = [i for i in range(5) if labels[i] != -100]
    manual = torch.stack([keep[i] * -torch.log(p[i, labels[i]] / keep[i]) - alpha * torch.log(keep[i]) for i in rows])
    per_item = deep_abstaining_loss(logits, labels, alpha=alpha, reduction="none")
    assert per_item[2] == 0
    torch.testing.assert_close(per_item[rows], manual)
    torch.testing.assert_close(deep_abstaining_loss(logits, labels, alpha=alpha), manual.mean())
    torch.testing.assert_close(
        deep_abstaining_loss(logits, labels, alpha=alpha, reduction="mean", num_items_in_batch=8), manual.sum() / 8
    )


def test_abstaining_is_cheap_on_a_wrong_prediction_only_when_alpha_is_small():
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0]], requires_grad=True)  # confident in class 0
    wrong = torch.tensor([1])
    for alpha, sign in ((0.1, -1), (20.0, 1)):
        logits.grad = None
        deep_abstaining_loss(logits, wrong, alpha=alpha).backward()
        # d loss / d abstain logit < 0 → gradient descent raises the abstain logit (abstains more)
        assert np.sign(float(logits.grad[0, -1])) == sign


def test_multitask_dac_loss_averages_tasks_with_their_own_alpha():
    torch.manual_seed(2)
    logits = {"a": torch.randn(4, 3), "b": torch.randn(4, 4)}
    labels = torch.tensor([[0, 1], [1, -100], [-100, 2], [0, 0]])
    total = multitask_dac_loss(logits, labels, alphas={"a": 0.5, "b": 2.0})
    a = deep_abstaining_loss(logits["a"], labels[:, 0], alpha=0.5)
    b = deep_abstaining_loss(logits["b"], labels[:, 1], alpha=2.0)
    torch.testing.assert_close(total, (a + b) / 2)
    torch.testing.assert_close(multitask_dac_loss(logits, labels, alphas=torch.tensor([0.5, 2.0])), total)


def test_alpha_update_direction_and_clipping():
    assert update_alpha(1.0, 0.90, 0.97, gain=10, scale=2) == pytest.approx(0.5)  # clipped at 1/scale
    assert update_alpha(1.0, 0.96, 0.97, gain=10, scale=2) == pytest.approx(0.9)  # too many errors: abstain more
    assert update_alpha(1.0, 0.99, 0.97, gain=10, scale=2) == pytest.approx(1.2)  # spare accuracy: abstain less
    assert update_alpha(1.0, None, 0.97, gain=10, scale=2) > 1.0  # abstained on everything


def _noisy_corpus(n=360, seed=0):
    """Token 3 → class 0, token 4 → class 1 (clean); reports with token 5 have random labels (noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        body = rng.integers(6, 40, 20).tolist()
        body[rng.integers(0, 20)] = 3 + kind
        label = kind if kind < 2 else int(rng.integers(0, 2))
        rows.append({"input_ids": body, "labels": [label], "kind": kind})
    return Dataset.from_list(rows)


def _model(abstain=True, alpha=1.0):
    config = MtCNNConfig(
        vocab_size=40, embedding_dim=16, num_filters=8, kernel_sizes=[1, 2], dropout=0.0,
        task_labels={"site": ["a", "b"]}, abstain_class=abstain, dac_alpha=alpha,
    )  # fmt: skip
    torch.manual_seed(0)
    return MtCNNForReportClassification(config)


def test_dac_mtcnn_abstains_on_the_noisy_reports_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    data = _noisy_corpus()
    model = _model(alpha=0.3)
    args = DACConfig(
        output_dir=str(tmp_path / "run"), num_train_epochs=12, per_device_train_batch_size=32, learning_rate=1e-2,
        dac_target_accuracy=None, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    train = data.remove_columns("kind")
    DACTrainer(model=model, args=args, train_dataset=train, data_collator=ReportCollator()).train()
    batch = ReportCollator()([{"input_ids": r["input_ids"]} for r in data])
    full = model.predict_proba(batch["input_ids"], batch["attention_mask"], with_abstain=True)["site"].numpy()
    pred, abstained = dac_decisions(full)
    kind = np.asarray(data["kind"])
    assert abstained[kind == 2].mean() > 0.5 > abstained[kind < 2].mean() + 0.3
    clean = kind < 2
    assert (pred[clean & ~abstained] == kind[clean & ~abstained]).mean() > 0.95
    classes = model.predict_proba(batch["input_ids"], batch["attention_mask"])["site"]
    assert classes.shape == (len(data), 2)
    torch.testing.assert_close(classes, torch.as_tensor(full[:, :2] / full[:, :2].sum(1, keepdims=True)))
    model.save_pretrained(tmp_path / "dac")
    loaded = AutoModel.from_pretrained(tmp_path / "dac")
    assert loaded.config.abstain_class and torch.equal(loaded.dac_alpha, model.dac_alpha)
    torch.testing.assert_close(loaded.predict_proba(batch["input_ids"], batch["attention_mask"])["site"], classes)


def test_alpha_is_tuned_toward_the_target_on_the_validation_split(tmp_path):
    torch.set_num_threads(1)
    data = _noisy_corpus(240, seed=1).remove_columns("kind")
    model = _model(alpha=5.0)  # starts penalising abstention heavily: validation accuracy ≈ 2/3 + 1/6 < target
    args = DACConfig(
        output_dir=str(tmp_path / "run"), num_train_epochs=4, per_device_train_batch_size=32, learning_rate=1e-2,
        dac_target_accuracy=0.95, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = DACTrainer(
        model=model, args=args, train_dataset=data.select(range(180)), eval_dataset=data.select(range(180, 240)),
        data_collator=ReportCollator(),
    )  # fmt: skip
    trainer.train()
    history = [h["dac_alpha/site"] for h in trainer.state.log_history if "dac_alpha/site" in h]
    assert len(history) == 4 and history[-1] < 5.0 and all(b <= a for a, b in zip(history, history[1:]))


def test_dac_trainer_refuses_bad_setups(tmp_path):
    args = DACConfig(output_dir=str(tmp_path), report_to="none")
    data = _noisy_corpus(12).remove_columns("kind")
    with pytest.raises(ValueError, match="abstain_class=True"):
        DACTrainer(model=_model(abstain=False), args=args, train_dataset=data, data_collator=ReportCollator())
    with pytest.raises(ValueError, match="eval_dataset"):
        DACTrainer(model=_model(), args=args, train_dataset=data, data_collator=ReportCollator())
    with pytest.raises(ValueError, match="unknown task"):
        DACTrainer(
            model=_model(), args=DACConfig(output_dir=str(tmp_path), dac_task_targets='{"organ": 0.9}'),
            train_dataset=data, eval_dataset=data, data_collator=ReportCollator(),
        )  # fmt: skip
    with pytest.raises(ValueError, match="single models"):
        MtCNNConfig(task_labels={"s": ["a", "b"]}, num_members=2, abstain_class=True)
