"""`reportkd push` uploads only what the model kind declares (issue 12, item 1).

A model folder also holding credentials, a token file, report data, a `.env`, pickle weights and symlinks leading out
of it is pushed to a local hub: none of those arrive, each is listed as left out, `--include` cannot reach outside the
folder or name a secret, a push deletes nothing unless `--delete-missing`, and `--dry-run` prints exactly what the
real push then writes.
"""

import json
import os

import pytest
import torch

from reportkd.cli import main
from reportkd.hub import plan_upload, push_to_hub

SECRET = "hf_SECRETSECRETSECRET"
REPORTS = ["Left lung, lobectomy: invasive adenocarcinoma.", "Brain, resection: glioblastoma, WHO grade 4."] * 2
PLANTED = ["credentials.json", "hf_token.txt", "reports.jsonl", ".env", "vocab.txt", "pytorch_model.bin",
           "linked_dir/"]  # fmt: skip


@pytest.fixture
def model_dir(tmp_path):
    """A saved MtCNN with thresholds and provenance, plus everything that must stay home."""
    from reportkd.hub import DistillationInfo
    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer

    folder = tmp_path / "student"
    tok = train_word_tokenizer(REPORTS, min_count=1, max_length=16)
    config = MtCNNConfig(vocab_size=len(tok), embedding_dim=4, num_filters=2, kernel_sizes=[2], max_length=16,
                         pad_token_id=tok.pad_token_id, task_labels={"organ": ["lung", "brain"]})  # fmt: skip
    torch.manual_seed(0)
    MtCNNForReportClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "thresholds.json").write_text(json.dumps({"tasks": {"organ": {"threshold": 0.9}}}))
    DistillationInfo(method="ensemble_distillation", training_data="toy").save(folder)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.txt").write_text(SECRET)
    (folder / "credentials.json").write_text(json.dumps({"token": SECRET}))
    (folder / "hf_token.txt").write_text(SECRET)
    (folder / "reports.jsonl").write_text(json.dumps({"report": REPORTS[0]}) + "\n")
    (folder / ".env").write_text(f"HF_TOKEN={SECRET}\n")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    os.symlink(outside / "private.txt", folder / "vocab.txt")  # a tokenizer file name the kind allows
    os.symlink(outside, folder / "linked_dir")
    return folder


def hub_files(repo):
    return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())


def listed(printed, mark):
    return sorted(line.split()[1] for line in printed.splitlines() if line.startswith(f"  {mark} "))


def test_push_uploads_only_the_declared_files_and_lists_what_was_left_out(model_dir, tmp_path, capsys):
    hub = tmp_path / "hub"
    assert main(["push", str(model_dir), "--repo-id", "org/m", "--local-hub", str(hub)]) == 0
    printed = capsys.readouterr().out
    repo = hub / "org" / "m"
    assert hub_files(repo) == ["README.md", "config.json", "configuration_mtcnn.py", "distillation.json",
                               "model.safetensors", "modeling_mtcnn.py", "thresholds.json", "tokenizer.json",
                               "tokenizer_config.json"]  # fmt: skip
    assert all(SECRET not in p.read_text(errors="ignore") for p in hub.rglob("*") if p.is_file())
    assert listed(printed, "-") == sorted(PLANTED)  # each one named, with its reason
    assert "symlink to a file outside the folder" in printed and "secret-looking name" in printed
    assert "data-like file" in printed and "pickle-based file" in printed


def test_dry_run_lists_exactly_what_the_push_writes(model_dir, tmp_path, capsys):
    hub = tmp_path / "hub"
    args = ["push", str(model_dir), "--repo-id", "org/m", "--local-hub", str(hub), "--include", "reports.jsonl"]
    assert main([*args, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert not hub.exists()  # nothing written
    assert main(args) == 0
    real = capsys.readouterr().out
    assert listed(dry, "+") == hub_files(hub / "org" / "m") and "reports.jsonl" in listed(dry, "+")
    assert listed(dry, "-") == listed(real, "-") == sorted(set(PLANTED) - {"reports.jsonl"})


@pytest.mark.parametrize("include", ["../elsewhere/private.txt", "../x", "{outside}", "sub/../../x"])
def test_include_outside_the_folder_is_refused_with_one_line(model_dir, tmp_path, capsys, include):
    include = include.format(outside=tmp_path / "elsewhere" / "private.txt")
    hub = tmp_path / "hub"
    assert main(["push", str(model_dir), "--repo-id", "org/m", "--local-hub", str(hub), "--include", include]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--include" in err and "folder" in err
    assert not hub.exists()


@pytest.mark.parametrize("include", ["credentials.json", "hf_token.txt", ".env", "*.txt", "pytorch_model.bin",
                                     "vocab.txt"])  # fmt: skip
def test_secrets_pickles_and_outside_symlinks_are_refused_even_when_included(model_dir, tmp_path, include):
    with pytest.raises(ValueError, match="Refusing to upload"):
        push_to_hub(model_dir, "org/m", local_hub=tmp_path / "hub", include=[include])
    assert not (tmp_path / "hub").exists()


def test_data_files_need_their_exact_name_and_a_symlink_inside_the_folder_is_uploaded(model_dir, tmp_path):
    (model_dir / "extras").mkdir()
    (model_dir / "extras" / "labels_map.json").write_text("{}")
    plan = plan_upload(model_dir, "org/m", include=["*.jsonl", "extras/*"])  # globs do not pick data files up
    assert "reports.jsonl" not in plan.files and "extras/labels_map.json" not in plan.files
    plan = plan_upload(model_dir, "org/m", include=["reports.jsonl"])
    assert "reports.jsonl" in plan.files
    (model_dir / "extras" / "vocab_map.json").write_text("{}")
    plan = plan_upload(model_dir, "org/m", include=["extras"])  # a folder: the files under it, data ones excepted
    assert "extras/vocab_map.json" in plan.files and "extras/labels_map.json" not in plan.files
    with pytest.raises(ValueError, match="symlinked folder"):
        plan_upload(model_dir, "org/m", include=["linked_dir"])
    os.remove(model_dir / "vocab.txt")
    os.symlink("tokenizer.json", model_dir / "vocab.txt")  # resolves inside: its target's bytes are uploaded
    push_to_hub(model_dir, "org/m", local_hub=tmp_path / "hub")
    repo = tmp_path / "hub" / "org" / "m"
    assert not (repo / "vocab.txt").is_symlink()
    assert (repo / "vocab.txt").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_a_push_deletes_nothing_unless_delete_missing(model_dir, tmp_path, capsys):
    hub = tmp_path / "hub"
    repo = hub / "org" / "m"
    push_to_hub(model_dir, "org/m", local_hub=hub)
    (repo / "notes.md").write_text("kept")  # a file of the destination this push does not upload
    os.remove(model_dir / "thresholds.json")
    args = ["push", str(model_dir), "--repo-id", "org/m", "--local-hub", str(hub)]
    assert main(args) == 0
    assert (repo / "notes.md").is_file() and (repo / "thresholds.json").is_file()
    capsys.readouterr()
    assert main([*args, "--delete-missing", "--dry-run"]) == 0
    assert listed(capsys.readouterr().out, "x") == ["notes.md", "thresholds.json"]
    assert (repo / "notes.md").is_file()  # the dry run deleted nothing
    assert main([*args, "--delete-missing"]) == 0
    assert not (repo / "notes.md").exists() and not (repo / "thresholds.json").exists()
    assert (repo / "model.safetensors").is_file()


def test_local_hub_writes_stay_inside_the_repository_folder(model_dir, tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    escape = tmp_path / "escape"
    escape.mkdir()
    os.symlink(escape, hub / "org")  # <hub>/org/m would land outside the hub
    with pytest.raises(ValueError, match="outside the local hub"):
        push_to_hub(model_dir, "org/m", local_hub=hub)
    assert list(escape.iterdir()) == []
    with pytest.raises(ValueError, match="Invalid repository id"):
        push_to_hub(model_dir, "../m", local_hub=hub)


def test_pushing_warns_with_the_left_out_files(model_dir, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="reportkd.hub.push"):
        push_to_hub(model_dir, "org/m", local_hub=tmp_path / "hub")
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert all(name in record.getMessage() for name in PLANTED)


@pytest.mark.parametrize("name,uploaded", [
    ("model.safetensors", True), ("config.json", True), ("special_tokens_map.json", True), ("vocab.txt", True),
    ("thresholds.json", True), ("text_encoder/model.safetensors", False), ("checkpoint-1/model.safetensors", False),
    ("soft_labels.safetensors", False), ("slide_features.safetensors", False), ("predictions.json", False),
    ("secrets.yaml", False), ("my_api_key.txt", False), ("server.pem", False), (".env.local", False),
    ("training_args.bin", False), ("optimizer.pt", False), ("trainer_state.json", False), ("notes.txt", False),
    (".gitattributes", False), ("runs/events.out", False),
])  # fmt: skip
def test_each_file_gets_one_verdict(tmp_path, name, uploaded):
    from reportkd.hub import select_files
    from reportkd.text.mtcnn.model_kind import MTCNN_KIND

    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    selection = select_files(tmp_path, MTCNN_KIND)
    assert (name in selection.files) is uploaded
    assert (name in selection.files) != any(name == k or name.startswith(k) for k in selection.left_out)
