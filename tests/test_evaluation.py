import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from reportkd.cli import main
from reportkd.evaluation import classification_metrics, format_metrics_table


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300)
    probs[np.arange(300), y] += rng.uniform(0, 1, 300)  # informative but imperfect
    probs /= probs.sum(1, keepdims=True)
    labels = y.copy()
    labels[:5] = -100
    m = classification_metrics(probs, labels, n_bootstrap=200)
    keep = slice(5, None)
    pred = probs[keep].argmax(1)
    assert m["n"] == 295 and m["n_missing"] == 5
    assert m["accuracy"] == pytest.approx((pred == y[keep]).mean())
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[keep], pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y[keep], pred, average="macro"))
    assert m["macro_auroc"] == pytest.approx(roc_auc_score(y[keep], probs[keep], multi_class="ovr"))
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auroc"):
        lo, hi = m[f"{k}_ci"]
        assert lo <= m[k] <= hi and hi - lo < 0.2
    assert "| t | 295 |" in format_metrics_table({"t": m})


def test_evaluate_generations_command(tmp_path, capsys):
    ref = "organ: kidney | histology: clear cell renal cell carcinoma | grade: G2"
    rows = [
        {"prediction": ref, "reference": ref},
        {"prediction": "organ: kidney | histology: papillary | grade: G2", "reference": ref},
        {"prediction": "garbage without fields", "reference": ref},
    ]
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["evaluate", "generations", "--predictions", str(path), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 3 and 0 < metrics["field_accuracy"] < 1 and metrics["exact_match"] == pytest.approx(1 / 3)
    assert "rougeL" in capsys.readouterr().out
    assert main(["evaluate", "generations", "--predictions", str(path), "--prediction-key", "nope"]) == 2
