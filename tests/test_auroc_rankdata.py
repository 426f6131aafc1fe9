"""``macro_auroc`` with ``scipy.stats.rankdata``: the same values as the former Python ranking loop and sklearn,
ties included."""

import numpy as np
import pytest

from reportkd.evaluation import macro_auroc


def loop_rank(x):
    """The former implementation: average 1-based ranks, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks, xs, i = np.empty(len(x)), x[order], 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def loop_auroc(y, probs):
    scores = []
    for c in np.unique(y):
        pos, neg = probs[y == c, c], probs[y != c, c]
        if len(pos) and len(neg):
            r = loop_rank(np.concatenate([pos, neg]))
            scores.append((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return float(np.mean(scores)) if scores else None


@pytest.mark.parametrize("decimals", [None, 1, 2])  # rounding makes many ties
def test_rankdata_auroc_equals_the_loop_and_sklearn(decimals):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    probs = rng.dirichlet(np.ones(4), 300) + 0.3 * np.eye(4)[y]
    if decimals is not None:
        probs = probs.round(decimals)
    assert macro_auroc(y, probs) == pytest.approx(loop_auroc(y, probs), abs=1e-12)
    per_class = [roc_auc_score(y == c, probs[:, c]) for c in range(4)]
    assert macro_auroc(y, probs) == pytest.approx(np.mean(per_class), abs=1e-12)


def test_single_class_has_no_auroc():
    assert macro_auroc(np.zeros(5, dtype=int), np.full((5, 2), 0.5)) is None
