"""Mixed teachers: groups of MtCNN and HiSAN members, out-of-fold soft labels averaged over all of them."""

import numpy as np
import pytest
import torch

from reportkd.synthetic import generate_reports
from reportkd.text.hisan import HiSANForReportClassification
from reportkd.text.mtcnn import MtCNNEnsembleForReportClassification
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.job import default_training_args
from reportkd.text.mtcnn.pipeline import prepare_data
from reportkd.text.mtcnn.predict import predict_member_probs
from reportkd.text.mtcnn.teachers import TeacherSpec, mixed_teacher_probs, train_mixed_teacher


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(architecture="bert"), "architecture"),
        (dict(members=0), "members"),
        (dict(dropout=1.5), "dropout"),
        (dict(architecture="hisan", kernel_sizes=[3]), "MtCNN settings"),
    ],
)
def test_spec_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        TeacherSpec(**bad)


def test_spec_parses_from_a_string():
    spec = TeacherSpec.parse("mtcnn:members=4,kernel_sizes=2/3,dropout=0.2")
    assert (spec.architecture, spec.members, spec.kernel_sizes, spec.dropout) == ("mtcnn", 4, [2, 3], 0.2)
    assert TeacherSpec.parse({"architecture": "hisan", "members": 2}).members == 2
    with pytest.raises(ValueError, match="name=value"):
        TeacherSpec.parse("hisan:heads=2")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed")
    job = MtCNNJobArguments(tasks=["organ", "grade"], members=2, folds=2, embedding_dim=8, num_filters=4,
                            max_length=64, teacher_epochs=1)  # fmt: skip
    prepared = prepare_data(generate_reports(80, seed=1), job)
    args = default_training_args(out, num_train_epochs=1, seed=3, disable_tqdm=True, logging_strategy="no")
    specs = ["mtcnn:members=4,kernel_sizes=2/3,member_chunk_size=2", TeacherSpec("hisan", members=2, attention_heads=2,
                                                             attention_dim_per_head=4, words_per_line=5)]  # fmt: skip
    return prepared, train_mixed_teacher(prepared, job, args, specs, out)


def test_mixed_soft_labels_are_the_mean_over_all_held_out_members(mixed):
    prepared, teacher = mixed
    mtcnn, hisan = teacher.groups
    assert isinstance(mtcnn.models[0], MtCNNEnsembleForReportClassification) and mtcnn.models[0].num_members == 4
    assert mtcnn.models[0].config.kernel_sizes == [2, 3] and mtcnn.models[0].config.member_chunk_size == 2
    assert len(hisan.models) == 2 and all(isinstance(m, HiSANForReportClassification) for m in hisan.models)
    # out-of-fold: every member trained on some reports and not on others
    for group in teacher.groups:
        assert group.trains_on.any(1).all() and (~group.trains_on).any(1).all()
    pad = prepared.tokenizer.pad_token_id
    probs = [predict_member_probs(mtcnn.models[0], prepared.train, pad_token_id=pad)]
    probs += [{t: p[None] for t, p in predict_member_probs(m, prepared.train, pad_token_id=pad).items()}
              for m in hisan.models]  # fmt: skip
    held_out = np.concatenate([~mtcnn.trains_on, ~hisan.trains_on])  # (6, N)
    held_out[:, held_out.sum(0) == 0] = True
    for task, soft in teacher.soft_labels.items():
        members = np.concatenate([p[task] for p in probs])  # (6, N, C)
        expected = (members * held_out[..., None]).sum(0) / held_out.sum(0)[:, None]
        np.testing.assert_allclose(soft, expected, atol=1e-5)
        np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
        # out-of-fold, not the plain mean over all members (members that trained on a report do not label it)
        assert not np.allclose(soft, members.mean(0), atol=1e-4)
    assert set(teacher.accuracy) == {"organ", "grade"} and len(teacher.group_accuracy) == 2
    assert all(0 <= a <= 1 for g in teacher.group_accuracy for a in g.values())


def test_mixed_teacher_probs_on_other_reports_average_every_member(mixed):
    prepared, teacher = mixed
    pad = prepared.tokenizer.pad_token_id
    got = mixed_teacher_probs(teacher, prepared.test, pad)
    ensemble = predict_member_probs(teacher.groups[0].models[0], prepared.test, pad_token_id=pad)
    singles = [predict_member_probs(m, prepared.test, pad_token_id=pad) for m in teacher.groups[1].models]
    for task, value in got.items():
        expected = (ensemble[task].sum(0) + sum(s[task] for s in singles)) / 6
        np.testing.assert_allclose(value, expected, atol=1e-5)
    assert torch.tensor(got["organ"]).sum(-1).allclose(torch.ones(len(prepared.test)), atol=1e-5)


def test_teacher_archs_round_trip_through_the_canonical_string():
    from reportkd.text.mtcnn.specs import format_teacher_archs, parse_student_arch, parse_teacher_archs

    text = "mtcnn:4(kernel_sizes=2/3,dropout=0.3,seed=7),hisan:2(embedding_dim=96,words_per_line=10,epochs=3.0)"
    specs = parse_teacher_archs(text)
    assert specs[0].kernel_sizes == [2, 3] and specs[0].seed == 7 and specs[1].words_per_line == 10
    canonical = "mtcnn:4(seed=7,dropout=0.3,kernel_sizes=2/3),hisan:2(embedding_dim=96,words_per_line=10,epochs=3.0)"
    assert format_teacher_archs(specs) == canonical and parse_teacher_archs(canonical) == specs
    listed = parse_teacher_archs(["mtcnn:2(dropout=0.2)", {"architecture": "hisan", "members": 1}])
    assert [(g.architecture, g.members, g.dropout) for g in listed] == [("mtcnn", 2, 0.2), ("hisan", 1, None)]
    assert parse_teacher_archs(None) is None and parse_teacher_archs(" ") is None
    assert parse_student_arch("hisan(attention_heads=8)").attention_heads == 8
