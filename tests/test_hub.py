"""Model cards and push_to_hub for every model kind, offline.

The hub path is exercised by intercepting ``HfApi.create_repo`` / ``list_repo_files`` / ``create_commit`` (the
exact files, their bytes, the card, privacy and endpoint are asserted); the local hub path by pushing and loading
back with ``from_pretrained`` / open_clip. Models are tiny and random; nothing is downloaded.
"""

import json
import types

import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, RepoUrl

from reportkd.abstention import Calibration, Threshold
from reportkd.hub import (
    MODEL_FILES,
    MODEL_KINDS,
    DistillationInfo,
    ModelKind,
    detect_model_kind,
    plan_upload,
    push_to_hub,
    register_model_kind,
    render_card,
)

SECTIONS = ("## Model details", "## Distillation", "## Training data", "## Evaluation", "## Intended use",
            "## Limitations", "## How to load", "Not a medical device")  # fmt: skip
REPORTS = [
    "Right kidney, radical nephrectomy: clear cell renal cell carcinoma, Fuhrman grade 2.",
    "Left lung, lobectomy: invasive adenocarcinoma, moderately differentiated.",
    "Brain, resection: glioblastoma, WHO grade 4.",
    "Prostate, biopsy: acinar adenocarcinoma, Gleason score 3+4.",
] * 2


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach a real hub (huggingface_hub reads HF_HUB_OFFLINE once, at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- tiny saved models of each kind ----------------------------------------------------------------------------
def make_mtcnn(folder, with_thresholds=True):
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer
    from reportkd.text.mtcnn.pipeline import save_classifier

    tok = train_word_tokenizer(REPORTS, min_count=1, max_length=32)
    labels = {"organ": ["kidney", "lung", "brain", "other"], "grade": ["G1", "G2", "G3", "G4"]}
    config = MtCNNConfig(vocab_size=len(tok), embedding_dim=8, num_filters=4, kernel_sizes=[2, 3], max_length=32,
                         pad_token_id=tok.pad_token_id, task_labels=labels)  # fmt: skip
    torch.manual_seed(0)
    model = MtCNNForReportClassification(config).eval()
    calibration = None
    if with_thresholds:
        calibration = Calibration(
            {"organ": Threshold(0.8, 0.7, 0.96, 50, 0.95, "ltt", 0.1), "grade": Threshold(1.0 + 2e-16, 0.0, None, 50,
                                                                                        0.95, "ltt", 0.1)},
            "per-task", "ltt", 0.95, 0.1, calibration_size=50,
        )  # fmt: skip
    save_classifier(model, tok, folder, calibration)
    (folder / "eval_results.json").write_text(json.dumps({"split": "test, 40 reports", "tasks": {
        "organ": {"accuracy": 0.9, "coverage": 0.6, "selective_accuracy": 0.97, "n": 40},
        "grade": {"accuracy": 0.5, "coverage": 0.0, "selective_accuracy": None, "n": 40}}}))  # fmt: skip
    DistillationInfo(method="ensemble_distillation", teachers=["ensemble of 4 MtCNNs"],
                     training_data="4 toy reports", hyperparameters={"alpha": 0.5}).save(folder)  # fmt: skip
    return model, tok


def make_causal_lm(folder, lora=False):
    from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer

    tok = train_bpe_tokenizer(REPORTS, vocab_size=120)
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    model = causal_lm_from_config(config, tok, seed=0).eval()
    if lora:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        base_dir = folder.parent / (folder.name + "-base")
        model.save_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir)  # the adapter records where its base is
        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_()  # LoRA starts as the identity; make the adapter matter
        model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps({"field_accuracy": 0.5, "rougeL": 0.7, "bleu": 21.0,
                                                          "accuracy_organ": 0.8, "train_seconds": 3.0}))  # fmt: skip
    DistillationInfo(method="skd", teachers=["org/teacher-lm"], base_model="org/base-lm", training_data="toy",
                     hyperparameters={"top_k": 25}).save(folder)  # fmt: skip
    return model, tok


def make_open_clip(folder):
    from reportkd.vlm.clip.models import load_open_clip, save_open_clip

    torch.manual_seed(0)
    bundle = load_open_clip("reportkd-clip-tiny-student")
    save_open_clip(bundle.model, folder, model_cfg=bundle.model_cfg)
    (folder / "eval_results.json").write_text(json.dumps({"num_pairs": 32, "i2t_R@1": 0.25, "zero_shot_acc": 0.5}))
    DistillationInfo(method="clip_kd", teachers=["hf-hub:wisdomik/QuiltNet-B-32"], training_data="toy tiles",
                     datasets=["org/pathology-pairs"]).save(folder)  # fmt: skip
    return bundle.model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = {name: root / name for name in ("mtcnn", "causal_lm", "lora", "open_clip")}
    models = {
        "mtcnn": make_mtcnn(out["mtcnn"]),
        "causal_lm": make_causal_lm(out["causal_lm"]),
        "lora": make_causal_lm(out["lora"], lora=True),
        "open_clip": make_open_clip(out["open_clip"]),
    }
    (out["causal_lm"] / "training_args.bin").write_bytes(b"pickle")  # never uploaded
    (out["causal_lm"] / "completions.jsonl").write_text('{"report": "text"}\n')  # may hold report text
    (out["causal_lm"] / "checkpoint-1").mkdir()
    return out, models


# -- hub path (intercepted) -------------------------------------------------------------------------------------
class FakeHub:
    """Records what HfApi would send; no network."""

    def __init__(self, monkeypatch, existing=(".gitattributes",)):
        self.calls = []
        hub = self

        def create_repo(api, repo_id, **kw):
            hub.calls.append(("create_repo", api.endpoint, api.token, repo_id, kw))
            return RepoUrl(f"{api.endpoint}/{repo_id}", endpoint=api.endpoint)

        def list_repo_files(api, repo_id, **kw):
            return list(existing)

        def create_commit(api, repo_id, operations, **kw):
            hub.calls.append(("create_commit", api.endpoint, api.token, repo_id, list(operations), kw))
            return types.SimpleNamespace(commit_url=f"{api.endpoint}/{repo_id}/commit/1")

        for name, fn in (("create_repo", create_repo), ("list_repo_files", list_repo_files),
                         ("create_commit", create_commit)):  # fmt: skip
            monkeypatch.setattr(HfApi, name, fn)

    def commit(self):
        (commit,) = [c for c in self.calls if c[0] == "create_commit"]
        return commit


def test_hub_push_creates_a_private_repo_and_commits_exactly_the_model_files(folders, monkeypatch):
    out, _ = folders
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.hospital.test")
    hub = FakeHub(monkeypatch, existing=[".gitattributes", "model.safetensors", "adapter_config.json"])
    result = push_to_hub(out["causal_lm"], "org/skd-student", delete_missing=True)
    (_, endpoint, token, repo_id, kw) = hub.calls[0]
    assert (endpoint, token, repo_id) == ("http://hub.hospital.test", None, "org/skd-student")
    assert kw["private"] is True and kw["exist_ok"] is True
    _, endpoint, _, _, operations, kw = hub.commit()
    added = {op.path_in_repo: op for op in operations if isinstance(op, CommitOperationAdd)}
    expected = ["README.md", "config.json", "distillation.json", "eval_results.json", "generation_config.json",
                "model.safetensors", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    assert sorted(added) == expected
    # asked to mirror the folder: a stale adapter (loaders would take the model for an adapter) is deleted
    assert [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)] == ["adapter_config.json"]
    assert result.plan.deletions == ["adapter_config.json"]
    assert added["model.safetensors"].path_or_fileobj == str(out["causal_lm"] / "model.safetensors")
    card = ModelCard(added["README.md"].path_or_fileobj.decode())
    assert card.data.library_name == "transformers" and card.data.base_model == "org/base-lm"
    assert card.data.pipeline_tag == "text-generation" and "reportkd" in card.data.tags
    assert {r.metric_type for r in card.data.eval_results} == {"field_accuracy", "rougeL", "bleu", "accuracy_organ"}
    assert "Xu et al. Speculative Knowledge Distillation" in card.text and "org/teacher-lm" in card.text
    assert result.private is True and result.endpoint == "http://hub.hospital.test" and result.commit_url
    assert "training_args.bin" in result.plan.left_out and "completions.jsonl" in result.plan.left_out


def test_hub_push_deletes_nothing_unless_asked(folders, monkeypatch):
    out, _ = folders
    hub = FakeHub(monkeypatch, existing=[".gitattributes", "model.safetensors", "adapter_config.json", "notes.md"])
    result = push_to_hub(out["causal_lm"], "org/skd-student")
    assert not [op for op in hub.commit()[4] if isinstance(op, CommitOperationDelete)] and result.plan.deletions == []
    plan = push_to_hub(out["causal_lm"], "org/skd-student", dry_run=True, delete_missing=True).plan
    assert plan.deletions == ["adapter_config.json", "notes.md"] and "x notes.md" in plan.describe()


def test_endpoint_and_token_arguments_win_and_public_is_explicit(folders, monkeypatch):
    out, _ = folders
    monkeypatch.setenv("HF_ENDPOINT", "http://env.test")
    hub = FakeHub(monkeypatch)
    push_to_hub(out["mtcnn"], "org/m", endpoint="http://arg.test/", token="hf_x", private=False,
                commit_message="v1")  # fmt: skip
    assert hub.calls[0][1:4] == ("http://arg.test", "hf_x", "org/m") and hub.calls[0][4]["private"] is False
    assert hub.commit()[5]["commit_message"] == "v1"


def test_dry_run_lists_the_files_and_touches_nothing(folders, monkeypatch, tmp_path, capsys):
    from reportkd.cli import main

    out, _ = folders
    hub = FakeHub(monkeypatch)
    result = push_to_hub(out["causal_lm"], "org/x", dry_run=True)
    assert result.dry_run and hub.calls == [] and "README.md" in result.files
    assert main(["push", str(out["mtcnn"]), "--repo-id", "org/m", "--local-hub", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "model.safetensors" in printed and "thresholds.json" in printed and "Dry run" in printed
    assert list(tmp_path.iterdir()) == [] and hub.calls == []


# -- local hub round trips ----------------------------------------------------------------------------------------
def test_mtcnn_local_hub_round_trip_with_thresholds_and_a_replacing_re_push(folders, tmp_path, capsys):
    from transformers import AutoModel

    from reportkd.cli import main
    from reportkd.commands._classifier import load_classifier

    out, models = folders
    model, tok = models["mtcnn"]
    hub = tmp_path / "hub"
    assert main(["push", str(out["mtcnn"]), "--repo-id", "org/mtcnn-student", "--local-hub", str(hub)]) == 0
    repo = hub / "org" / "mtcnn-student"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "configuration_mtcnn.py",
                                                      "distillation.json", "eval_results.json", "model.safetensors",
                                                      "modeling_mtcnn.py", "thresholds.json", "tokenizer.json",
                                                      "tokenizer_config.json"]  # fmt: skip
    loaded = AutoModel.from_pretrained(repo).eval()
    ids = tok(REPORTS[:3], return_tensors="pt", padding=True)["input_ids"]
    for task, logits in model(input_ids=ids).logits.items():
        torch.testing.assert_close(loaded(input_ids=ids).logits[task], logits, rtol=0, atol=0)
    clf = load_classifier(repo)  # thresholds check the copied weights' fingerprint
    assert clf.thresholds is not None and clf.thresholds.thresholds["organ"] == 0.8
    card = ModelCard.load(repo / "README.md")
    assert all(s in card.text for s in SECTIONS) and "## Abstention" in card.text
    assert "| organ | 0.800 | 0.700 | 0.960 | yes |" in card.text and "always abstains" in card.text
    assert "| organ | 4 | 0.800 | 0.900 | 0.600 | 0.970 |" in card.text
    assert "doi.org/10.1093/jamiaopen/ooac075" in card.text and "kidney, lung, brain, other" in card.text
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.license == "other" and card.data.eval_results[0].metric_name == "organ accuracy"
    # re-push without the thresholds: kept in the repository unless --delete-missing; no temporary folder is left
    (out["mtcnn"] / "thresholds.json").rename(tmp_path / "thresholds.json")
    try:
        push_to_hub(out["mtcnn"], "org/mtcnn-student", local_hub=hub, license="apache-2.0")
        assert (repo / "thresholds.json").is_file()
        assert ModelCard.load(repo / "README.md").data.license == "apache-2.0"
        result = push_to_hub(out["mtcnn"], "org/mtcnn-student", local_hub=hub, delete_missing=True)
    finally:
        (tmp_path / "thresholds.json").rename(out["mtcnn"] / "thresholds.json")
    assert result.plan.deletions == ["thresholds.json"] and not (repo / "thresholds.json").exists()
    assert sorted(p.name for p in (hub / "org").iterdir()) == ["mtcnn-student"]


@pytest.mark.parametrize("name", ["causal_lm", "lora"])
def test_causal_lm_student_local_hub_round_trip(folders, tmp_path, name):
    out, models = folders
    model, tok = models[name]
    result = push_to_hub(out[name], f"org/{name}", local_hub=tmp_path)
    repo = tmp_path / "org" / name
    ids = tok(REPORTS[:2], return_tensors="pt", padding=True)
    if name == "lora":
        from peft import AutoPeftModelForCausalLM

        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(result.files)
        loaded = AutoPeftModelForCausalLM.from_pretrained(repo).eval()
        card = ModelCard.load(repo / "README.md")
        assert card.data.library_name == "peft" and "lora" in card.data.tags and "rank 2" in card.text
        assert card.data.base_model is None and "is not a hub repository" in card.text  # local base path
    else:
        from transformers import AutoModelForCausalLM

        assert "training_args.bin" not in result.files and "completions.jsonl" not in result.files
        loaded = AutoModelForCausalLM.from_pretrained(repo).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**ids).logits, model(**ids).logits)


def test_open_clip_student_local_hub_round_trip(folders, tmp_path):
    import open_clip

    out, models = folders
    push_to_hub(out["open_clip"], "org/clip-student", local_hub=tmp_path)
    repo = tmp_path / "org" / "clip-student"
    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{repo}")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().encode_image(pixels), models["open_clip"].encode_image(pixels))
    card = ModelCard.load(repo / "README.md")
    assert card.data.library_name == "open_clip" and card.data.datasets == ["org/pathology-pairs"]
    assert {r.metric_type for r in card.data.eval_results} == {"i2t_R@1", "zero_shot_acc"}  # counts left out
    assert "CLIP-KD" in card.text and "hf-hub:org/clip-student" in card.text and "2 layers × width 32" in card.text
    assert all(s in card.text for s in SECTIONS)


# -- the trainer's push_to_hub ---------------------------------------------------------------------------------
def test_trainer_push_to_hub_saves_records_provenance_and_writes_the_local_hub(tmp_path):
    from datasets import Dataset
    from transformers import AutoModel

    from reportkd.data import ReportCollator
    from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer

    model, tok = make_mtcnn(tmp_path / "seed", with_thresholds=False)
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(2, len(tok), (6,), generator=g).tolist(), "labels": [i % 4, 1],
             "teacher_probs": {"organ": [0.7, 0.1, 0.1, 0.1], "grade": [0.25] * 4}} for i in range(8)]  # fmt: skip
    args = MtCNNDistillationConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        save_strategy="steps", save_steps=1, disable_tqdm=True, alpha=0.5, push_to_hub=True,
        hub_model_id="org/trained", hub_local_dir=str(tmp_path / "hub"),
    )  # fmt: skip
    assert args.hub_private_repo is True  # private unless asked
    trainer = MtCNNDistillationTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                  data_collator=ReportCollator(min_length=3), processing_class=tok)  # fmt: skip
    assert trainer.hub_model_id == "org/trained"  # no repository created anywhere for a local hub
    trainer.train()
    repo = tmp_path / "hub" / "org" / "trained"
    assert (repo / "model.safetensors").is_file()  # pushed at the checkpoint save (without the checkpoint itself)
    assert DistillationInfo.load(repo).method == "soft_target_kd"  # from the config's loss
    result = trainer.push_to_hub(training_data="8 random rows", method="ensemble_distillation")
    assert result.location == str(repo) and "training_args.bin" not in result.files
    info = DistillationInfo.load(repo)
    assert info.method == "ensemble_distillation" and info.training_data == "8 random rows"
    assert info.hyperparameters["alpha"] == 0.5 and info.hyperparameters["global_batch_size"] == 4
    assert "beta" not in info.hyperparameters  # only the generalized JSD uses it
    assert AutoModel.from_pretrained(repo).config.task_labels == model.config.task_labels
    with pytest.raises(TypeError, match="Unknown card fields"):
        trainer.push_to_hub(dataset="typo")


def test_trainer_creates_a_private_hub_repo_at_the_endpoint(tmp_path, monkeypatch):
    from reportkd.trainer import DistillationConfig, DistillationTrainer

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.hospital.test")
    hub = FakeHub(monkeypatch)
    model, _ = make_mtcnn(tmp_path / "seed", with_thresholds=False)
    args = DistillationConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, push_to_hub=True,
                              hub_model_id="org/remote")  # fmt: skip
    trainer = DistillationTrainer(model=model, args=args)
    assert hub.calls == [("create_repo", "http://hub.hospital.test", None, "org/remote",
                          {"private": True, "exist_ok": True})]  # fmt: skip
    assert trainer.hub_model_id == "org/remote"


# -- kinds, refusals -------------------------------------------------------------------------------------------
def test_each_kind_is_detected_and_unknown_or_pickle_only_folders_are_refused(folders, tmp_path):
    out, _ = folders
    assert {name: detect_model_kind(out[name]).name for name in out} == {
        "mtcnn": "mtcnn", "causal_lm": "causal_lm", "lora": "causal_lm", "open_clip": "open_clip"}  # fmt: skip
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a model folder reportkd knows"):
        detect_model_kind(tmp_path)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="re-save with safetensors"):
        plan_upload(pickled, "org/p")
    with pytest.raises(ValueError, match="Refusing to upload training_args.bin .*pickle-based file"):
        plan_upload(out["causal_lm"], "org/p", include=["*.bin"])
    with pytest.raises(ValueError, match="Invalid repository id"):
        plan_upload(out["mtcnn"], "org/bad name")


def test_a_new_kind_is_one_registration_and_uses_the_slide_encoder_template(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "slide"
    folder.mkdir()
    (folder / "slide_encoder_config.json").write_text(json.dumps({"embed_dim": 8, "feature_dim": 16}))
    save_file({"w": torch.zeros(8, 16)}, str(folder / "model.safetensors"))
    DistillationInfo(teachers=["org/slide-teacher"], training_data="toy slides").save(folder)

    def collect(path, ctx):
        cfg = json.loads((path / "slide_encoder_config.json").read_text())
        return {"arch": {"embed_dim": cfg["embed_dim"], "feature_dim": cfg["feature_dim"], "patch_encoder": "toy"},
                "load_code": "model = SlideEncoder.from_pretrained(PATH)"}  # fmt: skip

    kind = ModelKind(
        name="test_slide_encoder", title="Slide encoder", card_template="slide_encoder.md", card_context=collect,
        detect=lambda path: (path / "slide_encoder_config.json").is_file(), library_name="pytorch",
        files=(*MODEL_FILES, "slide_encoder_config.json"), pipeline_tag="feature-extraction",
        required=("*.safetensors",),
    )  # fmt: skip
    register_model_kind(kind)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_model_kind(kind.__class__(**{**kind.__dict__, "title": "other"}))
        assert detect_model_kind(folder).name == "test_slide_encoder"
        card = render_card(folder, "org/slide")
        assert "Parameters | 128" in card.text and "SlideEncoder.from_pretrained" in card.text
        assert card.data.pipeline_tag == "feature-extraction" and all(s in card.text for s in SECTIONS)
        (folder / "notes.json").write_text("{}")  # not declared by the kind: left out
        result = push_to_hub(folder, "org/slide", local_hub=tmp_path / "hub")
        assert (tmp_path / "hub" / "org" / "slide" / "slide_encoder_config.json").is_file()
        assert "notes.json" in result.plan.left_out and "notes.json" not in result.files
    finally:
        MODEL_KINDS._items.pop("test_slide_encoder")


def test_card_only_writes_the_card_and_no_card_keeps_it(folders, tmp_path, capsys):
    import shutil

    from reportkd.cli import main

    out, _ = folders
    folder = tmp_path / "clip"
    shutil.copytree(out["open_clip"], folder)
    assert main(["push", str(folder), "--repo-id", "org/c", "--card-only"]) == 0
    readme = folder / "README.md"
    assert readme.read_text().startswith("---\n") and "hf-hub:org/c" in readme.read_text()
    readme.write_text(readme.read_text() + "\nEdited by the data owner.\n")
    assert main(["push", str(folder), "--repo-id", "org/c", "--local-hub", str(tmp_path / "hub"), "--no-card"]) == 0
    assert "Edited by the data owner." in (tmp_path / "hub" / "org" / "c" / "README.md").read_text()
    assert main(["push", str(folder), "--repo-id", "org/c", "--card-only", "--no-card"]) == 2  # mutually exclusive


def test_a_kind_that_fails_to_load_is_a_warning_naming_it_and_the_others_still_work(folders, monkeypatch, caplog):
    from importlib.metadata import EntryPoint

    from reportkd.hub import kinds

    broken = EntryPoint("broken_kind", "reportkd.no_such_family.model_kind:register_kinds", kinds.ENTRY_POINT_GROUP)
    installed = kinds._entry_points()
    monkeypatch.setattr(kinds, "_entry_points", lambda: (*installed, broken))
    monkeypatch.setattr(kinds, "_failed", set())
    out, _ = folders
    with caplog.at_level("WARNING", logger="reportkd.hub.kinds"):
        assert detect_model_kind(out["mtcnn"]).name == "mtcnn"
        detect_model_kind(out["open_clip"])  # reported once, not at every lookup
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "'broken_kind'" in record.getMessage() and "ModuleNotFoundError" in record.getMessage()
    with pytest.raises(KeyError, match="Unknown model kind 'broken_kind'"):
        plan_upload(out["mtcnn"], "org/m", kind="broken_kind")


def test_the_core_imports_no_family_and_each_family_registers_its_kind_once():
    import subprocess
    import sys

    code = ("import sys, reportkd.hub as h; print(sorted(m for m in sys.modules if m.startswith(('reportkd.text', "
            "'reportkd.vlm')))); h.load_model_kinds(); print(h.MODEL_KINDS.names())")  # fmt: skip
    first, second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.splitlines()  # fmt: skip
    assert first == "[]"  # reportkd.hub names no family module
    assert second == "['causal_lm', 'mtcnn', 'open_clip', 'patch_encoder', 'slide_encoder']"
    from reportkd.text.mtcnn.model_kind import MTCNN_KIND, register_kinds

    register_kinds()  # the package import and the entry point both register: the same kind again is a no-op
    assert MODEL_KINDS.get("mtcnn") is MTCNN_KIND
    with pytest.raises(ValueError, match="already registered"):
        register_model_kind(ModelKind(**{**MTCNN_KIND.__dict__, "title": "another mtcnn"}))
