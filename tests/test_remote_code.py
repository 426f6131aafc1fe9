"""Plain-transformers loading: saved MtCNN and slide-encoder folders ship their code with an ``auto_map``.

The decisive test loads them in a Python that cannot import reportkd (``python -S``: site-packages on ``sys.path``
without its ``.pth`` files, so the editable install is invisible, and an import hook hiding any other install) with
``trust_remote_code=True``.
"""

import json
import os
import subprocess
import sys
import sysconfig

import pytest
import torch

from reportkd.commands._classifier import check_model_dir, is_own_code

REPORTS = ["Left kidney: clear cell renal cell carcinoma, grade 2.", "Right breast: invasive ductal carcinoma.", "x"]
TASKS = {"organ": ["kidney", "breast", "other"], "grade": ["g1", "g2"]}

LOADER = """
import json, sys
sys.path.append(sys.argv[1])


class NoReportkd:  # also hides a non-editable install of reportkd in site-packages
    def find_spec(self, name, path=None, target=None):
        if name == "reportkd" or name.startswith("reportkd."):
            raise ImportError("reportkd is hidden in this test")


sys.meta_path.insert(0, NoReportkd())
try:
    import reportkd  # noqa: F401
    sys.exit("reportkd is importable: the test would prove nothing")
except ImportError:
    pass
import torch
from transformers import AutoModel, AutoTokenizer

out = {}
model = AutoModel.from_pretrained(sys.argv[2], trust_remote_code=True)
tok = AutoTokenizer.from_pretrained(sys.argv[2], trust_remote_code=True)
batch = tok(json.loads(sys.argv[4]), return_tensors="pt", padding=True)
out["mtcnn_module"] = type(model).__module__
out["mtcnn"] = {t: p.tolist() for t, p in model.predict_proba(**batch).items()}
slide = AutoModel.from_pretrained(sys.argv[3], trust_remote_code=True).eval()
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    res = slide(torch.randn(1, 6, 32, generator=g), torch.randint(0, 5, (1, 6, 2), generator=g))
out["slide_module"] = type(slide).__module__
out["slide"] = res.slide_embeds.tolist()
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from slide_tiny import tiny_encoder

    from reportkd.text.mtcnn import MtCNNConfig, MtCNNForReportClassification, train_word_tokenizer

    root = tmp_path_factory.mktemp("remote")
    tok = train_word_tokenizer(REPORTS * 3, min_count=1, max_length=32)
    torch.manual_seed(0)
    config = MtCNNConfig(
        vocab_size=len(tok), embedding_dim=8, num_filters=4, kernel_sizes=[2, 3], task_labels=TASKS, max_length=32
    )
    model = MtCNNForReportClassification(config).eval()
    model.save_pretrained(root / "mtcnn")
    tok.save_pretrained(root / "mtcnn")
    slide = tiny_encoder().eval()
    slide.save_pretrained(root / "slide")
    return root, model, tok, slide


def test_saved_folders_carry_their_code_and_auto_map(saved):
    root = saved[0]
    mtcnn = json.loads((root / "mtcnn" / "config.json").read_text())
    assert mtcnn["auto_map"] == {
        "AutoConfig": "configuration_mtcnn.MtCNNConfig",
        "AutoModel": "modeling_mtcnn.MtCNNForReportClassification",
    }
    assert {"configuration_mtcnn.py", "modeling_mtcnn.py"} <= {p.name for p in (root / "mtcnn").iterdir()}
    slide = json.loads((root / "slide" / "config.json").read_text())
    assert slide["auto_map"]["AutoModel"] == "modeling_slide.SlideEncoderModel"


def test_loads_with_plain_transformers_without_reportkd(saved, tmp_path):
    root, model, tok, slide = saved
    site = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    argv = [sys.executable, "-S", "-c", LOADER, site, str(root / "mtcnn"), str(root / "slide"), json.dumps(REPORTS)]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["mtcnn_module"].startswith("transformers_modules.") and "reportkd" not in result["mtcnn_module"]
    assert result["slide_module"].startswith("transformers_modules.")
    batch = tok(REPORTS, return_tensors="pt", padding=True)
    for task, probs in model.predict_proba(**batch).items():
        torch.testing.assert_close(torch.tensor(result["mtcnn"][task]), probs, rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        expected = slide(torch.randn(1, 6, 32, generator=g), torch.randint(0, 5, (1, 6, 2), generator=g))
    torch.testing.assert_close(torch.tensor(result["slide"]), expected.slide_embeds, rtol=0, atol=1e-5)


def test_with_reportkd_the_registered_classes_load_it_and_no_folder_code_runs(saved):
    from transformers import AutoModel

    from reportkd.text.mtcnn import MtCNNForReportClassification

    root = saved[0]
    assert type(AutoModel.from_pretrained(root / "mtcnn")) is MtCNNForReportClassification
    assert check_model_dir(root / "mtcnn") == root / "mtcnn"  # reportkd's own auto_map: accepted


def test_foreign_or_edited_code_is_still_refused(saved, tmp_path):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(saved[0] / "mtcnn", folder)
    config = json.loads((folder / "config.json").read_text())
    assert is_own_code(folder, config["auto_map"])
    with open(folder / "modeling_mtcnn.py", "a") as f:
        f.write("\nimport os  # an edit\n")
    assert not is_own_code(folder, config["auto_map"])
    with pytest.raises(ValueError, match="auto_map"):
        check_model_dir(folder)
    (folder / "modeling_mtcnn.py").write_bytes((saved[0] / "mtcnn" / "modeling_mtcnn.py").read_bytes())
    config["auto_map"]["AutoModel"] = "evil.Model"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map"):
        check_model_dir(folder)
    assert check_model_dir(folder, trust_remote_code=True) == folder
