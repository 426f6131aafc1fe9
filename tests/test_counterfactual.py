"""CoD counterfactuals: edits flip the teacher, are 1-minimal (restoring any one word undoes the flip), ids trace."""

import torch
from datasets import Dataset

from reportkd.text.mtcnn import MtCNNConfig
from reportkd.text.mtcnn.counterfactual import (
    _delete,
    counterfactual_edits,
    counterfactual_transfer_set,
    predict_classes,
)
from reportkd.text.mtcnn.ensemble import MtCNNEnsembleForReportClassification
from reportkd.text.mtcnn.modeling_mtcnn import MtCNNForReportClassification


def _config(members=1):
    labels = {"a": ["x", "y", "z"], "b": ["u", "v"]}
    return MtCNNConfig(vocab_size=50, embedding_dim=8, num_filters=4, kernel_sizes=[2, 3], max_length=40,
                       pad_token_id=0, task_labels=labels, num_members=members)  # fmt: skip


def _rows(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 50, (30,), generator=g).tolist() for _ in range(n)]


def _teachers():
    torch.manual_seed(0)
    single = MtCNNForReportClassification(_config())
    ensemble = MtCNNEnsembleForReportClassification(_config(3))
    with torch.no_grad():  # a confident random ensemble, so a few deletions can flip it
        ensemble.embeddings.weight.mul_(30)
    return single, ensemble


def test_edits_flip_the_teacher_and_are_one_minimal():
    rows = _rows()
    for teacher in _teachers():
        before = [p.clone() for p in teacher.parameters()]
        cfs = counterfactual_edits(teacher, rows, "a", max_edits=6, pad_token_id=0, min_length=3)
        found = [c for c in cfs if c is not None]
        assert len(found) >= 4, type(teacher).__name__
        for c in found:
            original = predict_classes(teacher, [rows[c.index]], "a", 0, 3)[0]
            assert c.original == original and c.flipped_to != original
            assert predict_classes(teacher, [c.input_ids], "a", 0, 3)[0] == c.flipped_to
            assert 1 <= len(c.deleted) <= 6 and c.input_ids == _delete(rows[c.index], c.deleted)
            for word in c.deleted:  # putting back any one deleted word undoes the flip
                rest = [w for w in c.deleted if w != word]
                assert predict_classes(teacher, [_delete(rows[c.index], rest)], "a", 0, 3)[0] == original
        assert all(a.equal(b) for a, b in zip(before, teacher.parameters()))  # teacher untouched


def test_protected_tokens_are_never_deleted():
    single, _ = _teachers()
    rows = _rows()
    protected = sorted({t for r in rows for t in r})[:25]
    for c in counterfactual_edits(single, rows, "a", max_edits=6, pad_token_id=0, min_length=3, protected=protected):
        assert c is None or not set(c.deleted) & set(protected)


def test_transfer_set_keeps_ids_traceable_and_cycles_tasks():
    single, _ = _teachers()
    rows = _rows(12)
    ds = Dataset.from_dict({"id": [f"r{i}" for i in range(12)], "input_ids": rows})
    out = counterfactual_transfer_set(single, ds, ["a", "b"], max_edits=6, pad_token_id=0, min_length=3)
    assert out["id"], "no counterfactual found"
    for cid, src, task, ids in zip(out["id"], out["source_id"], out["task"], out["input_ids"]):
        assert cid == f"{src}#cf-{task}"
        i = int(src[1:])
        assert task == ["a", "b"][i % 2] and len(ids) < len(rows[i])
