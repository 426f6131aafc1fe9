"""The MtCNN job with a mixed MtCNN + HiSAN teacher (``teacher_archs``) and a HiSAN student (``student_arch``)."""

import json

import numpy as np
import pytest
from transformers import AutoModel

from reportkd.cli import main as cli_main
from reportkd.data import load_soft_labels
from reportkd.hub import detect_model_kind
from reportkd.synthetic import generate_reports, write_reports
from reportkd.text.hisan import HiSANForReportClassification
from reportkd.text.mtcnn import MtCNNEnsembleForReportClassification
from reportkd.text.mtcnn.arguments import MtCNNJobArguments
from reportkd.text.mtcnn.job import default_training_args, run_mtcnn_job, stage_settings
from reportkd.text.mtcnn.pipeline import member_training_mask, prepare_data
from reportkd.text.mtcnn.predict import predict_member_probs, predict_probs
from reportkd.text.mtcnn.specs import TeacherSpec, group_job
from reportkd.text.mtcnn.teachers import MixedTeacherEnsemble

HISAN = "attention_heads=2,attention_dim_per_head=4,words_per_line=5"
MIXED = f"mtcnn:2(kernel_sizes=2/3/4),hisan:2({HISAN})"


def tiny_job(**kw) -> MtCNNJobArguments:
    values = dict(tasks=["organ", "grade"], folds=2, embedding_dim=8, num_filters=4, kernel_sizes=[2, 3],
                  max_length=64, teacher_archs=MIXED, student_arch=f"hisan({HISAN})")  # fmt: skip
    return MtCNNJobArguments(**{**values, **kw})


pytestmark = pytest.mark.usefixtures("no_full_gc")


@pytest.fixture(scope="module")
def records():
    return generate_reports(100, seed=2)


@pytest.fixture(scope="module")
def mixed_run(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed-job")
    args = default_training_args(out, num_train_epochs=1, disable_tqdm=True, logging_strategy="no")
    return out, args, run_mtcnn_job(records, tiny_job(), args)


def test_teacher_archs_and_student_arch_are_validated_with_one_line_errors():
    job = tiny_job(teacher_archs=" mtcnn:4 , hisan:2(dropout=0.2) ", folds=1)
    assert job.teacher_archs == "mtcnn:4,hisan:2(dropout=0.2)" and job.members == 6  # canonical, members = total
    assert [g.architecture for g in job.teacher_groups] == ["mtcnn", "hisan"]
    assert tiny_job(student_arch="hisan").student_spec.dropout is None
    for bad, message in [
        ("bert:4", "architecture 'bert'"),
        ("mtcnn", "ARCH:MEMBERS"),
        ("mtcnn:4(kernel_sizes=a)", "not a number"),
        ("mtcnn:4(heads=2)", "name=value"),
        ("hisan:2(kernel_sizes=3)", "MtCNN settings"),
        ("mtcnn:4(dropout=0.3", "unbalanced"),
        ("mtcnn:4,,hisan:2", "empty group"),
        ("mtcnn:3", "must divide the members"),  # folds=2
    ]:
        with pytest.raises(ValueError, match=message) as e:
            tiny_job(teacher_archs=bad)
        assert "\n" not in str(e.value)
    for bad, message in [("cnn", "architecture"), ("hisan:2", "ARCH or ARCH"), ("mtcnn(members=2)", "members")]:
        with pytest.raises(ValueError, match=message):
            tiny_job(student_arch=bad)
    with pytest.raises(ValueError, match="MtCNN-only teacher"):
        tiny_job(counterfactuals="add")


def test_the_mixed_teacher_trains_both_groups_and_its_soft_labels_are_the_held_out_mean(records, mixed_run):
    out, args, results = mixed_run
    manifest = json.loads((out / "ensemble" / "teacher.json").read_text())
    assert [g["folder"] for g in manifest["groups"]] == ["group-0-mtcnn", "group-1-hisan"]
    ensemble = AutoModel.from_pretrained(out / "ensemble" / "group-0-mtcnn")
    assert isinstance(ensemble, MtCNNEnsembleForReportClassification) and ensemble.num_members == 2
    assert ensemble.config.kernel_sizes == [2, 3, 4]  # the group's own windows, not the job's
    hisans = [AutoModel.from_pretrained(out / "ensemble" / "group-1-hisan" / f"member-{m}") for m in range(2)]
    assert all(isinstance(m, HiSANForReportClassification) and m.config.dropout == 0.1 for m in hisans)
    # recompute, independently of the job's code path: each member's softmax, averaged over the held-out members
    job = tiny_job()
    prepared = prepare_data(records, job, args.seed)
    pad = prepared.tokenizer.pad_token_id
    member_probs = [predict_member_probs(ensemble, prepared.train, pad_token_id=pad)]
    member_probs += [{t: p[None] for t, p in predict_member_probs(m, prepared.train, pad_token_id=pad).items()}
                     for m in hisans]  # fmt: skip
    n = len(prepared.train)
    masks = [member_training_mask(group_job(job, TeacherSpec("mtcnn", members=2)), n, args.seed),
             member_training_mask(group_job(job, TeacherSpec("hisan", members=2)), n, args.seed + 1000)]  # fmt: skip
    held_out = ~np.concatenate(masks)  # (4, N)
    assert held_out.any(1).all() and (~held_out).any(1).all()  # out-of-fold: every member saw some reports only
    held_out[:, held_out.sum(0) == 0] = True
    soft, _ = load_soft_labels(out / "soft_labels.safetensors", ids=prepared.train["id"],
                               task_labels=prepared.task_labels)  # fmt: skip
    for task, value in soft.items():
        members = np.concatenate([p[task] for p in member_probs])  # (4, N, C)
        expected = (members * held_out[..., None]).sum(0) / held_out.sum(0)[:, None]
        np.testing.assert_allclose(value, expected, atol=1e-5)
        assert not np.allclose(value, members[:2].mean(0), atol=1e-4)  # both architectures count
    # on other reports the teacher is the plain mean over all four members
    teacher = MixedTeacherEnsemble.from_pretrained(out / "ensemble", job, n)
    got = predict_probs(teacher, prepared.test, pad_token_id=pad)
    for task, value in got.items():
        members = [predict_member_probs(ensemble, prepared.test, pad_token_id=pad)[task].sum(0)]
        members += [predict_member_probs(m, prepared.test, pad_token_id=pad)[task] for m in hisans]
        np.testing.assert_allclose(value, sum(members) / 4, atol=1e-5)
    ens_test = results["models"]["ensemble"]["organ"]["test"]["accuracy"]
    labels = np.asarray(prepared.test["labels"])[:, 0]
    assert ens_test == pytest.approx(float((got["organ"].argmax(-1) == labels)[labels != -100].mean()))


def test_results_record_each_teacher_group(mixed_run):
    out, _, results = mixed_run
    teacher = json.loads((out / "results.json").read_text())["teacher"]
    assert teacher == results["teacher"] and teacher["teacher_archs"] == MIXED and teacher["members"] == 4
    mtcnn, hisan = teacher["groups"]
    assert [(g["architecture"], g["members"]) for g in (mtcnn, hisan)] == [("mtcnn", 2), ("hisan", 2)]
    assert mtcnn["hyperparameters"]["kernel_sizes"] == [2, 3, 4] and mtcnn["hyperparameters"]["dropout"] == 0.5
    assert hisan["hyperparameters"]["attention_heads"] == 2 and hisan["hyperparameters"]["dropout"] == 0.1
    for group in (mtcnn, hisan):
        assert isinstance(group["wall_time_s"], float) and group["wall_time_s"] >= 0  # rounded: tiny groups give 0.0
        assert set(group["test_accuracy"]) == set(group["train_accuracy"]) == {"organ", "grade"}
        assert all(0 <= a <= 1 for a in group["test_accuracy"].values())
    assert teacher["wall_time_s"] >= mtcnn["wall_time_s"] + hisan["wall_time_s"] - 0.5
    card = json.loads((out / "student" / "distillation.json").read_text())
    assert "2 MtCNNs, 2 HiSANs" in card["teachers"][0]


def test_a_hisan_student_loads_with_automodel_and_works_with_predict_calibrate_and_push(records, mixed_run, tmp_path):
    out, _, results = mixed_run
    for name in ("student", "baseline"):  # the baseline has the student's architecture
        model = AutoModel.from_pretrained(out / name)
        assert isinstance(model, HiSANForReportClassification) and model.config.attention_heads == 2
        assert detect_model_kind(out / name).name == "mtcnn"
    data = write_reports(tmp_path / "reports.jsonl", records[:20])
    preds = tmp_path / "preds.jsonl"
    assert cli_main(["predict", "--model", str(out / "student"), "--data", str(data), "--out", str(preds)]) == 0
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 20 and set(lines[0]["tasks"]) == {"organ", "grade"}
    th = tmp_path / "th.json"
    assert cli_main(["calibrate", "--model", str(out / "student"), "--data", str(data), "--target-accuracy", "0.8",
                     "--method", "empirical", "--out", str(th)]) == 0  # fmt: skip
    assert json.loads(th.read_text())["tasks"].keys() == {"organ", "grade"}
    hub = tmp_path / "hub"
    assert cli_main(["push", str(out / "student"), "--repo-id", "org/hisan", "--local-hub", str(hub)]) == 0
    pushed = sorted(p.name for p in (hub / "org" / "hisan").iterdir() if p.is_file())
    assert {"config.json", "model.safetensors", "thresholds.json", "README.md", "tokenizer.json"} <= set(pushed)
    assert AutoModel.from_pretrained(hub / "org" / "hisan").config.model_type == "hisan"
    card = (hub / "org" / "hisan" / "README.md").read_text()
    assert "hierarchical self-attention network (HiSAN)" in card and "convolutions" not in card


def test_a_resumed_run_reloads_the_mixed_teacher_and_other_architectures_are_refused(records, mixed_run, monkeypatch):
    from reportkd.text.mtcnn import teachers

    out, args, results = mixed_run
    soft_before, _ = load_soft_labels(out / "soft_labels.safetensors")
    for stage in ("soft_labels", "calibration"):  # as if killed before these stages completed
        (out / "work" / "stages" / f"{stage}.json").unlink()
    monkeypatch.setattr(teachers, "train_teacher_groups", lambda *a, **k: pytest.fail("the teacher was retrained"))
    again = run_mtcnn_job(records, tiny_job(), args)
    soft_after, _ = load_soft_labels(out / "soft_labels.safetensors")
    for task in soft_before:  # recomputed from the reloaded groups and their rebuilt training masks
        np.testing.assert_allclose(soft_after[task], soft_before[task], atol=1e-6)
    assert again["teacher"]["groups"][0]["wall_time_s"] == results["teacher"]["groups"][0]["wall_time_s"]
    changes = [(dict(teacher_archs="mtcnn:2,hisan:2"), "teacher"), (dict(student_arch="mtcnn"), "baseline")]
    for changed, stage in changes:
        with pytest.raises(ValueError, match=f"other settings \\(stage '{stage}'"):
            run_mtcnn_job(records, tiny_job(**changed), args, resume=True)


def test_the_settings_hash_changes_with_teacher_and_student_architectures_only_when_set():
    args = default_training_args("/tmp/unused")
    plain = stage_settings(tiny_job(teacher_archs=None, student_arch="mtcnn"), args, "d", ["teacher", "student"])
    assert "teacher_archs" not in plain["teacher"] and "student_arch" not in plain["student"]  # old runs resume
    mixed = stage_settings(tiny_job(), args, "d", ["teacher", "student"])
    assert mixed["teacher"]["teacher_archs"] == MIXED and mixed["student"]["student_arch"].startswith("hisan")
    other = stage_settings(tiny_job(teacher_archs="mtcnn:2(dropout=0.3),hisan:2"), args, "d", ["teacher"])
    assert other["teacher"] != mixed["teacher"]


def test_consistent_teaching_and_unlabelled_reports_with_a_mixed_teacher(records, tmp_path, monkeypatch):
    calls = []
    soft_labels = MixedTeacherEnsemble.soft_labels

    def spy(self, input_ids, *a, **k):
        calls.append(input_ids.shape)
        return soft_labels(self, input_ids, *a, **k)

    monkeypatch.setattr(MixedTeacherEnsemble, "soft_labels", spy)
    extra = tmp_path / "backlog.jsonl"
    write_reports(extra, [{"id": f"u{i}", "text": r["text"]} for i, r in enumerate(generate_reports(10, seed=8))])
    args = default_training_args(tmp_path / "out", max_steps=2, disable_tqdm=True, per_device_train_batch_size=8)
    job = tiny_job(consistent_teaching=True, unlabelled=str(extra), student_arch="mtcnn", train_baseline=False)
    results = run_mtcnn_job(records, job, args)
    assert results["data"]["transfer"]["unlabelled"] == 10
    assert [shape[0] for shape in calls[:2]] == [8, 8]  # the teacher labelled each of the 2 student batches
