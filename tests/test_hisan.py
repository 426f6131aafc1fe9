"""HiSAN report classifier: config, AutoModel round trip, padding invariance, missing labels, training, model kind."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoConfig, AutoModel

import reportkd.text.hisan as hisan_pkg
from reportkd.data import ReportCollator
from reportkd.text.hisan import HiSANConfig, HiSANForReportClassification
from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer
from reportkd.text.mtcnn.trainer import MultitaskTrainer

TASKS = {"organ": ["breast", "kidney", "other"], "grade": ["G1", "G2", "G3", "G4"]}
LABELS = torch.tensor([[0, 1], [2, -100], [-100, 3], [1, 0], [-100, -100], [2, 2]])


def tiny_config(**kw) -> HiSANConfig:
    args = dict(vocab_size=40, embedding_dim=8, attention_heads=2, attention_dim_per_head=4, words_per_line=3,
                dropout=0.0, task_labels=TASKS)  # fmt: skip
    return HiSANConfig(**{**args, **kw})


def batch(lengths=(12, 7, 2, 1, 4, 12), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids


@pytest.fixture
def model() -> HiSANForReportClassification:
    torch.manual_seed(0)
    return HiSANForReportClassification(tiny_config()).eval()


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(task_labels={}), "task_labels is empty"),
        (dict(task_labels={"organ": ["a"]}), "at least two"),
        (dict(task_labels={"or.gan": ["a", "b"]}), "without '.'"),
        (dict(words_per_line=0), "words_per_line"),
        (dict(attention_heads=0), "attention_heads"),
        (dict(pad_token_id=40), "pad_token_id"),
        (dict(dropout=1.0), "dropout"),
        (dict(tasks=["organ"]), "must list each task"),
    ],
)
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def test_config_shares_the_mtcnn_task_interface(tmp_path):
    config = tiny_config(task_labels={"z_task": ["b", "a", "other"], "a_task": ["x", "y"]})
    assert config.task_names == ["z_task", "a_task"] and config.num_labels == {"z_task": 3, "a_task": 2}
    assert config.hidden_size == 8 and config.encode_labels({"z_task": "lung", "a_task": None}) == [2, -100]
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is HiSANConfig and loaded.task_names == ["z_task", "a_task"]


def test_registration_is_idempotent():
    importlib.reload(hisan_pkg)
    assert AutoConfig.for_model("hisan", task_labels=TASKS).model_type == "hisan"


def test_save_load_round_trip_through_automodel(model, tmp_path):
    ids = batch()
    expected = model.predict_proba(ids)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is HiSANForReportClassification
    got = loaded.predict_proba(ids)
    for task in TASKS:
        torch.testing.assert_close(got[task], expected[task], rtol=0, atol=0)
        assert torch.allclose(got[task].sum(-1), torch.ones(len(ids)))


def test_padding_and_masked_tokens_do_not_change_probabilities(model):
    ids = batch()
    probs = model.predict_proba(ids)
    padded = model.predict_proba(F.pad(ids, (0, 13)))
    alone = [model.predict_proba(ids[i : i + 1, : max(1, int((ids[i] != 0).sum()))]) for i in range(len(ids))]
    for task in TASKS:
        torch.testing.assert_close(padded[task], probs[task], atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.cat([a[task] for a in alone]), probs[task], atol=1e-6, rtol=0)
    # masked-out tokens act as padding, whatever their ids
    noisy = torch.cat([ids, torch.randint(1, 40, (len(ids), 5))], 1)
    mask = torch.cat([(ids != 0).long(), torch.zeros(len(ids), 5, dtype=torch.long)], 1)
    masked = model.predict_proba(noisy, attention_mask=mask)
    for task in TASKS:
        torch.testing.assert_close(masked[task], probs[task], atol=1e-6, rtol=0)
    # ...but the words of a report do matter
    changed = ids.clone()
    changed[0, 1] = (changed[0, 1] % 39) + 1
    assert not torch.allclose(model.predict_proba(changed)["organ"][0], probs["organ"][0])


def test_empty_report_gives_finite_probabilities_and_gradients(model):
    ids = batch(lengths=(0, 3))
    out = model.train()(ids, labels=torch.tensor([[0, 1], [1, 2]]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_missing_labels_are_ignored(model):
    ids = batch()
    out = model(ids, labels=LABELS)
    per_task = []
    for t, task in enumerate(TASKS):
        present = LABELS[:, t] != -100
        per_task.append(F.cross_entropy(out.logits[task][present], LABELS[present, t]))
    torch.testing.assert_close(out.loss, torch.stack(per_task).mean())
    # a missing label's row contributes no gradient to that task's head
    model.zero_grad()
    model(ids[4:5], labels=LABELS[4:5]).loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def _learnable_rows(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(3, 40, (int(torch.randint(4, 20, (1,), generator=g)),), generator=g)
        organ, grade = i % 3, i % 4
        ids[int(torch.randint(0, len(ids), (1,), generator=g))] = organ + 1  # ids 1..3 carry the organ
        labels = [organ, grade if i % 5 else -100]
        rows.append({"input_ids": ids.tolist(), "labels": labels})
    return Dataset.from_list(rows)


def test_trains_with_the_mtcnn_trainers_and_the_loss_drops(tmp_path):
    torch.manual_seed(0)
    model = HiSANForReportClassification(tiny_config(embedding_dim=16, attention_dim_per_head=8))
    data = _learnable_rows()
    collate = ReportCollator(pad_token_id=0)

    def loss_and_organ_accuracy() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            b = collate(list(data))
            out = model(b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
            return float(out.loss), float((out.logits["organ"].argmax(-1) == b["labels"][:, 0]).float().mean())

    before, _ = loss_and_organ_accuracy()
    args = MtCNNDistillationConfig(
        output_dir=str(tmp_path), max_steps=60, per_device_train_batch_size=16, learning_rate=1e-2, report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, remove_unused_columns=False, seed=0,
    )  # fmt: skip
    trainer = MtCNNDistillationTrainer(model=model, args=args, train_dataset=data, data_collator=collate)
    assert isinstance(trainer, MultitaskTrainer)
    trainer.train()
    after, organ_accuracy = loss_and_organ_accuracy()
    assert after < 0.85 * before and organ_accuracy > 0.9, (before, after, organ_accuracy)


def test_a_saved_hisan_is_a_report_classifier_model_kind(model, tmp_path):
    from reportkd.hub import detect_model_kind

    model.save_pretrained(tmp_path)
    assert detect_model_kind(tmp_path).name == "mtcnn"
