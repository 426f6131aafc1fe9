"""TRIDENT / CLAM interop: their feature files (written here the way those tools write them) are read everywhere
features are read, reportkd's HDF5 carries TRIDENT's attributes, TRIDENT slide lists are accepted.

Layouts follow mahmoodlab/TRIDENT ``trident/IO.py`` (``save_h5``: chunked datasets, attributes per dataset;
``coords_to_h5``: the ``coords`` attributes) and ``WSI.extract_patch_features`` (``features`` attributes, ``.pt`` =
``torch.save(features)``), and mahmoodlab/CLAM (``h5_files/<slide>.h5`` with ``features`` and ``coords``,
``pt_files/<slide>.pt`` = ``torch.save(features)``, patching attributes ``patch_size``, ``patch_level``,
``downsample`` on ``coords``).
"""

import json

import h5py
import numpy as np
import pytest
import torch

from reportkd.cli import main
from reportkd.vlm.slide.synthetic import SyntheticSlideWorld, write_synthetic_slides
from reportkd.vlm.wsi import SlideFeatures, load_features, read_slide_list, save_slide_features_h5

EASY = SyntheticSlideWorld(num_tissue_types=1, class_separation=1.0)


def trident_save_h5(path, assets, attributes):
    """TRIDENT's save_h5: one chunked dataset per asset, its attributes on the dataset, nothing on the root."""
    with h5py.File(path, "w") as f:
        for key, val in assets.items():
            dset = f.create_dataset(
                key, shape=val.shape, maxshape=(None,) + val.shape[1:], chunks=(1,) + val.shape[1:], dtype=val.dtype
            )
            dset[:] = val
            for k, v in attributes.get(key, {}).items():
                dset.attrs[k] = json.dumps(v) if isinstance(v, dict) else ("None" if v is None else v)


def write_trident(sf: SlideFeatures, folder, name):
    coords_attrs = {
        "patch_size": 256, "patch_size_level0": int(sf.patch_size_level0), "level0_magnification": 40,
        "target_magnification": 20, "overlap": 0, "name": name, "savetodir": "/data/trident/patches",
        "level0_width": 4096, "level0_height": 4096,
    }  # fmt: skip
    trident_save_h5(
        folder / f"{name}.h5",
        {"features": sf.features.numpy().astype(np.float32), "coords": sf.coords.numpy().astype(np.int64)},
        {"features": {"name": name, "savetodir": "/data/trident/features_uni_v1", "encoder": "uni_v1"},
         "coords": coords_attrs},
    )  # fmt: skip


def write_clam(sf: SlideFeatures, root, name):
    """CLAM: pt_files/<slide>.pt (the features tensor) and h5_files/<slide>.h5 (features, coords + patch attrs)."""
    (root / "pt_files").mkdir(exist_ok=True)
    (root / "h5_files").mkdir(exist_ok=True)
    torch.save(sf.features.clone(), root / "pt_files" / f"{name}.pt")
    with h5py.File(root / "h5_files" / f"{name}.h5", "w") as f:
        f.create_dataset("features", data=sf.features.numpy())
        coords = f.create_dataset("coords", data=sf.coords.numpy().astype(np.int64))
        coords.attrs["patch_size"] = int(sf.patch_size_level0) // 2
        coords.attrs["patch_level"] = 1
        coords.attrs["downsample"] = np.array([2.0, 2.0])
        coords.attrs["name"] = name


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    write_synthetic_slides(root, 60, seed=0, world=EASY)
    (root / "trident").mkdir()
    (root / "clam").mkdir()
    for path in sorted((root / "fine").glob("*.safetensors")):
        sf = load_features(path)
        name = path.name.removesuffix(".safetensors")
        write_trident(sf, root / "trident", name)
        write_clam(sf, root / "clam", name)
    return root


def test_trident_and_clam_files_load_with_their_coords_and_patch_size(slides):
    ours = load_features(next((slides / "fine").glob("*.safetensors")))
    name = ours.slide_id
    for path in (slides / "trident" / f"{name}.h5", slides / "clam" / "pt_files" / f"{name}.pt",
                 slides / "clam" / "h5_files" / f"{name}.h5"):  # fmt: skip
        sf = load_features(path)
        torch.testing.assert_close(sf.features, ours.features.float())
        assert torch.equal(sf.coords, ours.coords) and sf.patch_size_level0 == ours.patch_size_level0, path
        assert sf.slide_id == name and torch.equal(sf.grid, ours.grid)
    assert load_features(slides / "trident" / f"{name}.h5").encoder == "uni_v1"


def test_evaluate_features_reads_trident_h5_and_clam_pt_and_gets_the_same_metrics(slides, tmp_path, capsys):
    metrics = {}
    for key, folder in (
        ("ours", slides / "fine"),
        ("trident", slides / "trident"),
        ("clam", slides / "clam" / "pt_files"),
    ):
        out = tmp_path / f"{key}.json"
        argv = ["evaluate", "features", "--features", str(folder), "--labels", str(slides / "labels.csv"),
                "--bootstrap", "20", "--probes", "linear,knn", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        metrics[key] = json.loads(out.read_text())
    for key in ("trident", "clam"):
        assert metrics[key]["meta"]["splits"] == metrics["ours"]["meta"]["splits"]
        for probe in ("linear", "knn"):
            assert metrics[key][probe]["balanced_accuracy"] == pytest.approx(
                metrics["ours"][probe]["balanced_accuracy"]
            )


def test_pt_without_coordinates_gets_a_pseudo_grid_and_pickled_code_is_refused(tmp_path):
    feats = torch.randn(7, 4)
    torch.save(feats, tmp_path / "lonely.pt")
    sf = load_features(tmp_path / "lonely.pt")
    assert sf.metadata["coords_source"] == "pseudo-grid" and len({tuple(c) for c in sf.grid.tolist()}) == 7
    coords = torch.stack([torch.arange(7) * 512, torch.zeros(7, dtype=torch.long)], 1)
    torch.save({"features": feats, "coords": coords}, tmp_path / "dict.pt")
    assert load_features(tmp_path / "dict.pt").patch_size_level0 == 512
    torch.save({"features": feats, "extra": SlideFeatures}, tmp_path / "code.pt")  # a class: needs unpickling code
    with pytest.raises(ValueError, match="weights_only"):
        load_features(tmp_path / "code.pt")


def test_reportkd_h5_carries_trident_attributes_and_still_round_trips(tmp_path):
    sf = SlideFeatures(
        features=torch.randn(5, 8), coords=torch.tensor([[0, 0], [512, 0], [0, 512], [512, 512], [1024, 0]]),
        patch_size_level0=512, slide_id="s1", encoder="uni_v1",
        metadata={"patch_size": 256, "target_mpp": 0.5, "slide_mpp": 0.25},
    )  # fmt: skip
    path = save_slide_features_h5(tmp_path / "s1.h5", sf)
    with h5py.File(path, "r") as f:  # what TRIDENT's slide encoders read: attrs of 'coords'
        attrs = dict(f["coords"].attrs)
        assert attrs["patch_size_level0"] == 512 and attrs["patch_size"] == 256 and attrs["name"] == "s1"
        assert attrs["level0_magnification"] == 40 and attrs["target_magnification"] == 20
        assert f["features"].attrs["encoder"] == "uni_v1" and f.attrs["format"] == "reportkd.features.v1"
    back = load_features(path)
    assert torch.equal(back.features, sf.features) and back.metadata["target_mpp"] == 0.5 and back.encoder == "uni_v1"


def test_trident_slide_list_with_wsi_mpp_header(tmp_path):
    (tmp_path / "list.csv").write_text("wsi,mpp\na.svs,0.25\nsub/b.tiff,\n")
    specs = read_slide_list(tmp_path / "list.csv")
    assert [(s.path, s.mpp) for s in specs] == [(tmp_path / "a.svs", 0.25), (tmp_path / "sub/b.tiff", None)]
    (tmp_path / "cols.csv").write_text("mpp,wsi,notes\n0.5,c.svs,x\n")
    assert [(s.path.name, s.mpp) for s in read_slide_list(tmp_path / "cols.csv")] == [("c.svs", 0.5)]
    (tmp_path / "bad.csv").write_text("wsi,mpp\na.svs,fast\n")
    with pytest.raises(ValueError, match="not a number"):
        read_slide_list(tmp_path / "bad.csv")
