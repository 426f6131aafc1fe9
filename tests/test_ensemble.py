import pytest
import torch
from transformers import AutoModel

from reportkd.text.mtcnn import (
    MtCNNConfig,
    MtCNNEnsembleConfig,
    MtCNNEnsembleForReportClassification,
    MtCNNForReportClassification,
)
from reportkd.text.mtcnn.ensemble import clip_member_grad_norm_, fold_member_mask

TASKS = {"organ": ["breast", "kidney", "other"], "grade": ["G1", "G2", "G3", "G4"]}
LABELS = torch.tensor([[0, 1], [2, -100], [-100, 3], [1, 0], [-100, -100], [2, 2]])


def ensemble_config(**kw) -> MtCNNEnsembleConfig:
    args = dict(vocab_size=40, embedding_dim=6, num_filters=5, dropout=0.0, task_labels=TASKS, num_members=3)
    return MtCNNEnsembleConfig(**{**args, **kw})


def batch(lengths=(12, 7, 2, 1, 4, 12), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (len(lengths), max(lengths)), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids


@pytest.fixture
def ensemble() -> MtCNNEnsembleForReportClassification:
    torch.manual_seed(0)
    return MtCNNEnsembleForReportClassification(ensemble_config())


def grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_members_differ_and_logit_shapes(ensemble):
    out = ensemble(batch())
    assert out.logits["organ"].shape == (3, 6, 3) and out.doc_embeddings.shape == (3, 6, 15)
    w = ensemble.convs[0].weight
    assert not torch.equal(w[0], w[1])
    assert ensemble.embeddings.weight[:, 0].abs().sum() == 0  # pad rows start at zero


@pytest.mark.parametrize("share", [False, True])
def test_member_extraction_matches_ensemble(share):
    torch.manual_seed(0)
    ensemble = MtCNNEnsembleForReportClassification(ensemble_config(share_embeddings=share))
    ids = batch()
    out = ensemble(ids, labels=LABELS)
    for i in range(3):
        member = ensemble.member(i)
        assert type(member) is MtCNNForReportClassification and member.config.num_members == 1
        single = member(ids, labels=LABELS)
        for task in TASKS:
            torch.testing.assert_close(single.logits[task], out.logits[task][i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single.loss, out.member_losses[i])
    torch.testing.assert_close(out.loss, out.member_losses.sum())


def test_from_members_round_trip(ensemble):
    members = [ensemble.member(i) for i in range(3)]
    rebuilt = MtCNNEnsembleForReportClassification.from_members(members)
    assert rebuilt.num_members == 3
    for (name, a), b in zip(ensemble.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), name
    other = MtCNNForReportClassification(MtCNNConfig(vocab_size=41, embedding_dim=6, num_filters=5, task_labels=TASKS))
    with pytest.raises(ValueError, match="vocab_size"):
        MtCNNEnsembleForReportClassification.from_members([members[0], other])


@pytest.mark.parametrize("impl", ["fused", "conv1d"])
def test_gradient_per_member_equals_training_alone(ensemble, impl):
    ensemble.config.conv_impl = impl
    ids = batch()
    ensemble(ids, labels=LABELS).loss.backward()
    ens_grads = grads(ensemble)
    for i in range(3):
        member = ensemble.member(i)
        member(ids, labels=LABELS).loss.backward()
        alone = grads(member)
        torch.testing.assert_close(ens_grads["embeddings.weight"][i], alone["embeddings.weight"], rtol=1e-4, atol=1e-7)
        for j in range(3):
            torch.testing.assert_close(
                ens_grads[f"convs.{j}.weight"][i], alone[f"convs.{j}.weight"], rtol=1e-4, atol=1e-7
            )
            torch.testing.assert_close(ens_grads[f"convs.{j}.bias"][i], alone[f"convs.{j}.bias"], rtol=1e-4, atol=1e-7)
        for task in TASKS:
            key = f"classifiers.{task}.weight"
            torch.testing.assert_close(ens_grads[key][i], alone[key], rtol=1e-4, atol=1e-7)


def test_optimizer_steps_match_members_trained_alone(ensemble):
    members = [ensemble.member(i) for i in range(3)]
    opt = torch.optim.AdamW(ensemble.parameters(), lr=1e-2, foreach=True)
    member_opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in members]
    for seed in range(3):
        ids = batch(seed=seed)
        ensemble(ids, labels=LABELS).loss.backward()
        opt.step(), opt.zero_grad()
        for m, o in zip(members, member_opts):
            m(ids, labels=LABELS).loss.backward()
            o.step(), o.zero_grad()
    for i, m in enumerate(members):
        torch.testing.assert_close(ensemble.member(i).convs[2].weight, m.convs[2].weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ensemble.member(i).embeddings.weight, m.embeddings.weight, rtol=1e-4, atol=1e-6)


def test_member_mask_excludes_rows(ensemble):
    ids = batch()
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False], [False] * 6])
    out = ensemble(ids, labels=LABELS, member_mask=mask)
    out.loss.backward()
    masked = grads(ensemble)
    assert out.member_losses[2].item() == 0.0
    assert all(g[2].abs().sum() == 0 for g in masked.values())  # member 2 sees no rows: no gradient at all
    # member 1 gets exactly the gradient of training alone on its rows (other labels changed: no effect)
    alone_labels = LABELS.clone()
    alone_labels[3:] = -100
    member = ensemble.member(1)
    member(ids, labels=alone_labels).loss.backward()
    for name, g in grads(member).items():
        torch.testing.assert_close(masked[name][1], g, rtol=1e-4, atol=1e-7, msg=name)
    ensemble.zero_grad()
    shuffled = LABELS.clone()
    shuffled[3:, 0] = 0
    ensemble(ids, labels=shuffled, member_mask_by_row=mask.T).loss.backward()
    torch.testing.assert_close(grads(ensemble)["convs.1.weight"][1], masked["convs.1.weight"][1])


def test_per_member_gradient_clipping(ensemble):
    ids = batch()
    ensemble(ids, labels=LABELS).loss.backward()
    before = grads(ensemble)
    norms = clip_member_grad_norm_(ensemble, max_norm=1e-3)
    for i in range(3):
        member = ensemble.member(i)
        member(ids, labels=LABELS).loss.backward()
        torch.nn.utils.clip_grad_norm_(member.parameters(), 1e-3)
        torch.testing.assert_close(ensemble.convs[1].weight.grad[i], member.convs[1].weight.grad, rtol=1e-4, atol=1e-9)
        alone = torch.cat([g[i].flatten() for g in before.values()]).norm()
        torch.testing.assert_close(norms[i], alone, rtol=1e-4, atol=0)


def test_soft_labels(ensemble):
    ids = batch()
    soft = ensemble.soft_labels(ids, temperature=2.0)
    logits = ensemble(ids).logits
    for task in TASKS:
        expected = torch.stack([torch.softmax(logits[task][i] / 2.0, -1) for i in range(3)]).mean(0)
        torch.testing.assert_close(soft[task], expected)
        torch.testing.assert_close(soft[task].sum(-1), torch.ones(6))
    folds = torch.tensor([0, 1, 2, 0, 1, 2])
    train_mask = fold_member_mask(folds, num_members=3, num_folds=3)
    assert train_mask.tolist()[0] == [False, True, True, False, True, True]
    oof = ensemble.soft_labels(ids, member_mask=~train_mask)
    for row, fold in enumerate(folds.tolist()):
        torch.testing.assert_close(oof["organ"][row], torch.softmax(logits["organ"][fold, row], -1))
    with pytest.raises(ValueError, match="without any member"):
        ensemble.soft_labels(ids, member_mask=torch.zeros(3, 6, dtype=torch.bool))


def test_save_load_round_trip(ensemble, tmp_path):
    ensemble.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is MtCNNEnsembleForReportClassification and loaded.num_members == 3
    ids = batch()
    for task in TASKS:
        torch.testing.assert_close(loaded(ids).logits[task], ensemble(ids).logits[task], rtol=0, atol=0)
    torch.testing.assert_close(loaded.member(2)(ids).logits["organ"], ensemble.member(2)(ids).logits["organ"])


def test_accepts_plain_config():
    config = MtCNNConfig(vocab_size=40, embedding_dim=6, num_filters=5, task_labels=TASKS, num_members=2)
    model = MtCNNEnsembleForReportClassification(config)
    assert isinstance(model.config, MtCNNEnsembleConfig) and model.num_members == 2


def test_member_chunking_is_exact(ensemble):
    ids = batch()
    reference = ensemble(ids, labels=LABELS)
    reference.loss.backward()
    expected = grads(ensemble)
    for chunk in (1, 2):
        ensemble.zero_grad()
        ensemble.config.member_chunk_size = chunk
        out = ensemble(ids, labels=LABELS)
        torch.testing.assert_close(out.logits["grade"], reference.logits["grade"])
        out.loss.backward()
        torch.testing.assert_close(grads(ensemble)["convs.0.weight"], expected["convs.0.weight"])
        torch.testing.assert_close(grads(ensemble)["embeddings.weight"], expected["embeddings.weight"])


def test_trains_with_trainer(ensemble, tmp_path):
    from transformers import Trainer, TrainingArguments

    rows = [{"input_ids": batch(seed=s)[0].tolist(), "labels": LABELS[s % 6].tolist()} for s in range(8)]

    def collate(features):
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(f["input_ids"]) for f in features], batch_first=True)
        return {"input_ids": ids, "labels": torch.tensor([f["labels"] for f in features])}

    before = ensemble.convs[0].weight.detach().clone()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        save_strategy="no", disable_tqdm=True, remove_unused_columns=False,
    )  # fmt: skip
    Trainer(model=ensemble, args=args, train_dataset=rows, data_collator=collate).train()
    assert not torch.equal(before, ensemble.convs[0].weight)


@pytest.mark.parametrize("masked", [True, False])
def test_distillation_trainer_accumulation_is_exact_with_member_masks(tmp_path, masked):
    """Out-of-fold member masks give each member its own label counts: 2 accumulated batches of 4 must equal one
    batch of 8 (the counts of the whole step normalise each member's loss, as across processes)."""
    from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer

    g = torch.Generator().manual_seed(1)
    mask = torch.rand(8, 3, generator=g) < 0.6  # (rows, members): which members train on each row
    rows = [
        {"input_ids": batch(seed=s)[0].tolist(), "labels": LABELS[s % 6].tolist(), "member_in": mask[s].tolist()}
        for s in range(8)
    ]

    def collate(features):
        ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(f["input_ids"]) for f in features], batch_first=True)
        out = {"input_ids": ids, "labels": torch.tensor([f["labels"] for f in features])}
        if masked:
            out["member_mask"] = torch.tensor([f["member_in"] for f in features]).T
        return out

    weights = []
    for bs, ga in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        model = MtCNNEnsembleForReportClassification(ensemble_config())
        args = MtCNNDistillationConfig(
            output_dir=str(tmp_path / f"{bs}"), max_steps=1, per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga, learning_rate=0.1, optim="sgd", report_to="none", use_cpu=True,
            save_strategy="no", disable_tqdm=True, max_grad_norm=0.0, lr_scheduler_type="constant",
        )  # fmt: skip
        MtCNNDistillationTrainer(model=model, args=args, train_dataset=rows, data_collator=collate).train()
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-6)


def test_trainer_ensemble_loss_is_the_members_multitask_loss_with_task_weights(ensemble, tmp_path):
    """The ensemble trains through the student's loss: task weights honoured, each member normalised alone."""
    from reportkd.losses import multitask_kd_loss
    from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer

    weights = {"organ": 3.0, "grade": 1.0}
    args = MtCNNDistillationConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, task_weights=weights)
    trainer = MtCNNDistillationTrainer(model=ensemble, args=args)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    inputs = {"input_ids": batch(), "labels": LABELS, "member_mask": mask}
    loss = trainer.compute_loss(ensemble, inputs, num_items_in_batch=trainer.count_items(inputs))
    expected = 0.0
    for m in range(3):
        rows = mask[m]
        with torch.no_grad():
            logits = ensemble.member(m)(batch()[rows]).logits
        expected += multitask_kd_loss(logits, None, LABELS[rows], alpha=0.0, task_weights=weights)
    torch.testing.assert_close(loss, torch.as_tensor(expected))

    before = {t: ensemble.classifiers[t].weight.detach().clone() for t in TASKS}
    args = MtCNNDistillationConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=2, per_device_train_batch_size=6,
        save_strategy="no", disable_tqdm=True, task_weights={"organ": 1.0, "grade": 0.0}, max_grad_norm=0.0,
    )  # fmt: skip
    rows = [{"input_ids": batch()[i].tolist(), "labels": LABELS[i].tolist()} for i in range(6)]

    def collate(features):
        return {k: torch.tensor([f[k] for f in features]) for k in ("input_ids", "labels")}

    MtCNNDistillationTrainer(model=ensemble, args=args, train_dataset=rows, data_collator=collate).train()
    assert torch.equal(before["grade"], ensemble.classifiers["grade"].weight)  # weight 0: no gradient
    assert not torch.equal(before["organ"], ensemble.classifiers["organ"].weight)


@pytest.mark.parametrize("chunk", [1, 2])
def test_chunked_members_under_checkpointing_give_the_unchunked_loss_and_gradients(chunk):
    torch.manual_seed(0)
    ensemble = MtCNNEnsembleForReportClassification(ensemble_config(num_members=5)).train()
    ids, mask = batch(), fold_member_mask(torch.tensor([0, 1, 0, 1, 0, 1]), 5, 2)
    reference = ensemble(ids, labels=LABELS, member_mask=mask)
    reference.loss.backward()
    expected = grads(ensemble)
    ensemble.zero_grad()
    ensemble.config.member_chunk_size = chunk  # members run chunk by chunk end to end, recomputed in the backward
    out = ensemble(ids, labels=LABELS, member_mask=mask)
    torch.testing.assert_close(out.loss, reference.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.member_losses, reference.member_losses, atol=1e-6, rtol=0)
    for task in TASKS:
        torch.testing.assert_close(out.logits[task], reference.logits[task], atol=1e-6, rtol=0)
    out.loss.backward()
    for name, grad in grads(ensemble).items():
        torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("chunk", [None, 2])
def test_held_out_probability_sums_equal_the_dense_weighted_member_mean(ensemble, chunk):
    from datasets import Dataset

    from reportkd.text.mtcnn.ensemble import held_out_probability_sums
    from reportkd.text.mtcnn.predict import predict_member_probs

    ids = batch()
    data = Dataset.from_dict({"input_ids": [row[row != 0].tolist() or [0] for row in ids]})
    held_out = ~fold_member_mask(torch.tensor([0, 1, 2, 0, 1, 2]), 3, 3).numpy()
    sums, weight = held_out_probability_sums(ensemble, data, held_out, batch_size=4, member_chunk_size=chunk)
    member_probs = predict_member_probs(ensemble, data)  # (M, N, C) dense
    assert weight.tolist() == held_out.sum(0).tolist()
    for task, probs in member_probs.items():
        expected = (probs * held_out[..., None]).sum(0)
        assert abs(sums[task] - expected).max() < 1e-6
        assert abs(sums[task].sum(-1) - weight).max() < 1e-6  # each member's probabilities sum to 1
