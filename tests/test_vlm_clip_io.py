"""Loading / saving open_clip models, image-text data, evaluation metrics, the recipe end to end."""

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from vlm_clip_tiny import STUDENT, TEACHER, bundles, tiny_data

from reportkd.vlm.clip.data import CLIPCollator, image_tiles, load_image_text_dataset
from reportkd.vlm.clip.models import count_flops, load_open_clip, save_open_clip
from reportkd.vlm.evaluation import (
    build_zero_shot_classifier,
    evaluate_clip,
    linear_probe,
    retrieval_metrics,
    retrieval_recall_at_k,
)
from reportkd.vlm.synthetic_tiles import CLASSES, SyntheticHistology

REPO = Path(__file__).resolve().parents[1]
MATCH = json.dumps([{"student": "visual.transformer.resblocks.1", "teacher": "visual.transformer.resblocks.0"}])
WSI = REPO.parent / "shared" / "data" / "wsi"


def test_save_in_hub_format_loads_back_in_open_clip(tmp_path):
    student, _ = bundles(teacher=None)
    from reportkd.hub import DistillationInfo, write_card

    out = save_open_clip(student.model, tmp_path / "hub", model_cfg=student.model_cfg)
    DistillationInfo.from_run(
        "clip_kd",
        teachers=["some-teacher"],
        training_data="synthetic",
        losses={"clip_fd": 2.0},
        hyperparameters={"student architecture": STUDENT},
        command="python x.py",
    ).save(out)
    (out / "eval_results.json").write_text(json.dumps({"i2t_R@1": 0.5}))
    write_card(out, "ORG/tiny")
    assert {p.name for p in out.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors", "README.md",
                                               "distillation.json", "eval_results.json"}  # fmt: skip
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    pixels, ids = torch.randn(2, 3, 32, 32), tokenizer(["a", "b"])
    torch.testing.assert_close(model.encode_image(pixels), student.model.encode_image(pixels))
    torch.testing.assert_close(model.encode_text(ids), student.model.encode_text(ids))
    again = load_open_clip(str(out))  # a saved directory is a model name too
    assert again.model_cfg == student.model_cfg and again.tokenizer.context_length == 32
    readme = (out / "README.md").read_text()
    assert "library_name: open_clip" in readme and "some-teacher" in readme and "clip_fd" in readme


def test_load_from_json_config_and_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file

    student, _ = bundles(teacher=None)
    cfg = tmp_path / "my-tiny-clip.json"
    cfg.write_text(json.dumps(student.model_cfg))
    save_file(student.model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_open_clip(str(cfg), pretrained=str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(loaded.model.logit_scale, student.model.logit_scale)
    assert torch.equal(loaded.model.visual.proj, student.model.visual.proj)
    with pytest.raises(ValueError, match="only .safetensors"):
        load_open_clip(str(cfg), pretrained=str(tmp_path / "w.pt"))
    with pytest.raises(ValueError, match="Unknown open_clip model"):
        load_open_clip("no-such-model")
    assert count_flops(student.model)["total"] < count_flops(load_open_clip(TEACHER).model)["total"]


def test_synthetic_tiles_are_deterministic_balanced_and_captioned():
    a, b = SyntheticHistology(12, image_size=32, seed=0), SyntheticHistology(12, image_size=32, seed=0)
    assert all(a[i]["caption"] == b[i]["caption"] for i in range(12))
    assert (np.asarray(a[0]["image"]) == np.asarray(b[0]["image"])).all()
    assert sorted(a[i]["label"] for i in range(12)) == sorted(list(range(len(CLASSES))) * 2)
    other = SyntheticHistology(12, image_size=32, seed=1)
    assert [a[i]["caption"] for i in range(12)] != [other[i]["caption"] for i in range(12)]
    item = SyntheticHistology(6, image_size=64)[5]  # tumour
    assert item["group"].startswith("tumour|") and item["image"].size == (64, 64)
    red, green, blue = np.asarray(item["image"], dtype=np.float32).reshape(-1, 3).mean(0)
    assert red > green and blue > green  # H&E: pink / purple


def test_image_text_datasets_from_files(tmp_path):
    rows = []
    for i in range(3):
        Image.new("RGB", (20, 20), (200, 100 + 40 * i, 180)).save(tmp_path / f"t{i}.png")
        rows.append({"file_name": f"t{i}.png", "caption": f"tile {i}", "label": i})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    folder = load_image_text_dataset(tmp_path)
    assert len(folder) == 3 and folder[1]["caption"] == "tile 1" and folder[1]["label"] == 1
    csv = tmp_path / "pairs.csv"
    csv.write_text("path,text\nt0.png,first\nt2.png,second\n")
    pairs = load_image_text_dataset(csv, image_column="path", caption_column="text", label_column=None)
    assert pairs[1]["image"].size == (20, 20) and pairs[1]["label"] == -100
    with pytest.raises(KeyError, match="caption_column"):
        load_image_text_dataset(csv, image_column="path")
    from datasets import Dataset

    hf = load_image_text_dataset(Dataset.from_list([{"image": str(tmp_path / "t0.png"), "caption": "x"}]))
    assert hf[0]["caption"] == "x"
    synthetic = load_image_text_dataset("synthetic:n=5,size=24,seed=3")
    assert len(synthetic) == 5 and synthetic[0]["image"].size == (24, 24)
    student, _ = bundles(teacher=None)
    batch = CLIPCollator.for_models(student)([folder[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["class_labels"].tolist() == [0, 1, 2]
    assert "teacher_pixel_values" not in batch


@pytest.mark.shared_data
@pytest.mark.skipif(not (WSI / "cmu-1-small-region.svs").is_file(), reason="../shared/data/wsi is absent (real tiles)")
def test_real_tissue_tiles_run_through_student_and_teacher():
    tiles = image_tiles(WSI / "cmu-1-small-region.svs", tile_size=224, max_tiles=4)  # real H&E
    assert len(tiles) == 4 and tiles[0].size == (224, 224)
    student, teacher = bundles()
    batch = CLIPCollator.for_models(student, teacher)([{"image": t, "caption": "kidney tissue"} for t in tiles])
    with torch.no_grad():
        s = student.model.encode_image(batch["pixel_values"], normalize=True)
        t = teacher.model.encode_image(batch["teacher_pixel_values"], normalize=True)
    assert s.shape == (len(tiles), 16) and t.shape == (len(tiles), 24) and torch.isfinite(s).all()


def test_retrieval_recall_at_k():
    sim = torch.eye(4)
    assert retrieval_recall_at_k(sim, 1) == 1.0
    shifted = torch.roll(torch.eye(4), 1, dims=1)  # query i ranks item i+1 first
    assert retrieval_recall_at_k(shifted, 1) == 0.0 and retrieval_recall_at_k(shifted, 4) == 1.0
    assert retrieval_recall_at_k(shifted, 1, positives=torch.tensor([1, 2, 3, 0])) == 1.0
    feats = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    m = retrieval_metrics(feats, feats, ks=(1, 5))
    assert m["i2t_R@1"] == m["t2i_R@1"] == 1.0
    same = torch.ones(6, 5)  # every text identical: only groups make retrieval well defined
    assert retrieval_metrics(feats, same, groups=["a"] * 6)["t2i_R@1"] == 1.0


def test_zero_shot_classifier_averages_templates_and_synonyms():
    student, _ = bundles(teacher=None)
    model, tok = student.model, student.tokenizer
    templates = ["a photo of {}.", "{}"]
    weights = build_zero_shot_classifier(model, tok, [["fat", "adipose"], "tumour"], templates)
    with torch.no_grad():
        emb = model.encode_text(tok(["a photo of fat.", "fat", "a photo of adipose.", "adipose"]), normalize=True)
    torch.testing.assert_close(weights[0], torch.nn.functional.normalize(emb.mean(0), dim=-1))
    assert weights.shape == (2, 16)


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(60, 3, generator=g)
    assert linear_probe(x[:30], y[:30], x[30:], y[30:])["linear_probe_acc"] == 1.0


def test_evaluate_clip_on_a_saved_model(tmp_path):
    student, _ = bundles(teacher=None)
    out = save_open_clip(student.model, tmp_path / "m", model_cfg=student.model_cfg)
    metrics = evaluate_clip(str(out), "synthetic:n=24,size=32,seed=5", ks=(1, 5))
    assert {"i2t_R@1", "t2i_R@5", "zero_shot_acc", "linear_probe_acc"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("i2t_R@1", "zero_shot_acc", "linear_probe_acc"))
    direct = evaluate_clip(student.model, tiny_data(24, seed=5), ks=(1, 5))  # a module with default transforms
    assert direct["i2t_R@1"] == pytest.approx(metrics["i2t_R@1"])


def test_recipe_runs_end_to_end_offline_and_the_student_loads_back(tmp_path, monkeypatch):
    from reportkd.vlm.clip import recipe

    script_args, args = recipe.parse_args([
        "--config", str(REPO / "recipes" / "configs" / "clip_distill_synthetic.yaml"),
        "--teacher_model_name_or_path", TEACHER, "--student_model", STUDENT, "--teacher_train_steps", "2",
        "--train_data", "synthetic:n=16,size=32,seed=0", "--eval_data", "synthetic:n=12,size=32,seed=1",
        "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "2", "--warmup_steps", "0", "--use_cpu", "true", "--disable_tqdm", "true",
        "--layer_matches", MATCH,
        "--mask_ratio_end", "0.3",
    ])  # fmt: skip
    assert args.fd_weight == 2000.0 and args.max_steps == 2  # YAML value kept, flag override applied
    result = recipe.run(script_args, args)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{result['save_dir']}")
    assert model.visual.image_size == (32, 32)
    assert "i2t_R@1" in result["metrics"]
    card = (Path(result["save_dir"]) / "README.md").read_text()
    assert "teacher" in card and "clip_icl" in card
    assert "hidden:visual.transformer.resblocks.1<-visual.transformer.resblocks.0" in card
    with pytest.raises(ValueError, match="unknown keys"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("no_such_field: 1\n")
        recipe.parse_args(["--config", str(bad)])
