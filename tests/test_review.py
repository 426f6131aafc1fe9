"""The review page for human coders: n-gram attribution from the MtCNN's max-pooled windows, the page's data and its
escaping, and ``reportkd review`` (the headless-browser checks are in test_review_browser.py)."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from report_tiny import calibrated_student

from reportkd.cli import main
from reportkd.commands._classifier import load_classifier
from reportkd.text.hisan import HiSANConfig, HiSANForReportClassification
from reportkd.text.mtcnn.attribution import (
    Ngram,
    attribute_reports,
    decisive_ngrams,
    filter_contributions,
    hisan_token_attention,
    max_pool_windows,
    top_token_spans,
)
from reportkd.text.mtcnn.review import build_review, render_review_html, select_for_review

XSS = 'Left kidney </script><script>alert(1)</script> <img src=x onerror="document.title=1"> & \u2028 carcinoma'


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    found = calibrated_student(tmp_path_factory.mktemp("review"))
    found["clf"] = load_classifier(found["model"])
    return found


def _encode(clf, texts):
    enc = clf.tokenizer(texts, truncation=True, add_special_tokens=False, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_pooled_windows_are_the_models_features_and_argmax(student):
    clf = student["clf"]
    ids, mask = _encode(clf, student["texts"][:6] + ["kidney"])  # the last is shorter than every kernel
    pooled = max_pool_windows(clf.model, ids, mask)
    with torch.no_grad():
        out = clf.model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(pooled.features, out.doc_embeddings, atol=1e-5, rtol=1e-5)
    # each filter's window really is its best one: recompute the convolution at the reported start
    model, kernel_sizes = clf.model, clf.model.config.kernel_sizes
    n_filters = model.config.num_filters
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        x = model.embeddings.weight.detach()[ids[b, :n]]  # (n, E)
        for i, (conv, k) in enumerate(zip(model.convs, kernel_sizes)):
            padded = F.pad(x, (0, 0, 0, max(0, k - n)))
            scores = F.conv1d(padded.T.unsqueeze(0), conv.weight.detach())[0]  # (F, windows)
            for f in (0, n_filters - 1):
                j = i * n_filters + f
                start, end = int(pooled.starts[b, j]), int(pooled.ends[b, j])
                assert end == min(start + k, n)
                assert float(scores[f, start]) == pytest.approx(float(scores[f].max()), abs=1e-5)
    assert pooled.ends[-1].max() == 1  # a one-token report: every window is that token


def test_contributions_add_up_to_the_centred_logit(student):
    clf = student["clf"]
    ids, mask = _encode(clf, student["texts"][:4])
    pooled = max_pool_windows(clf.model, ids, mask)
    head = clf.model.classifiers["organ"]
    with torch.no_grad():
        logits = head(pooled.features)
        for c in range(head.weight.shape[0]):
            classes = torch.full((ids.shape[0],), c)
            total = (
                filter_contributions(head.weight, pooled.features, classes).sum(1) + head.bias[c] - head.bias.mean()
            )
            torch.testing.assert_close(total, logits[:, c] - logits.mean(1), atol=1e-4, rtol=1e-4)


def test_decisive_ngrams_merge_windows_and_keep_only_positive_pushes():
    contributions = torch.tensor([3.0, -1.0, 2.0, 0.5, 1.0, 0.0])
    starts = torch.tensor([4, 0, 4, 9, 1, 2])
    ends = torch.tensor([7, 3, 7, 11, 4, 5])
    got = decisive_ngrams(contributions, starts, ends, top_filters=4)
    assert got == [Ngram(4, 7, 5.0, 2), Ngram(1, 4, 1.0, 1), Ngram(9, 11, 0.5, 1)]
    assert decisive_ngrams(contributions, starts, ends, top_filters=1) == [Ngram(4, 7, 3.0, 1)]
    assert decisive_ngrams(contributions, starts, ends, top_filters=4, max_ngrams=1) == [Ngram(4, 7, 5.0, 2)]
    assert decisive_ngrams(-contributions.abs(), starts, ends) == []
    with pytest.raises(ValueError, match="top_filters"):
        decisive_ngrams(contributions, starts, ends, top_filters=0)


def _hisan(clf):
    torch.manual_seed(0)
    config = HiSANConfig(
        vocab_size=len(clf.tokenizer), embedding_dim=8, attention_heads=2, attention_dim_per_head=4, words_per_line=5,
        dropout=0.0, max_length=96, task_labels=clf.task_labels,
    )  # fmt: skip
    return HiSANForReportClassification(config).eval()


def test_hisan_attention_is_a_distribution_over_the_tokens_it_read(student):
    clf = student["clf"]
    model = _hisan(clf)
    texts = student["texts"][:3] + ["left kidney"]
    ids, mask = _encode(clf, texts)
    weights, documents = hisan_token_attention(model, ids, mask)
    with torch.no_grad():
        torch.testing.assert_close(documents, model(input_ids=ids, attention_mask=mask).doc_embeddings)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(texts)))
    assert bool((weights[mask == 0] == 0).all()) and bool((weights[mask == 1] > 0).all())
    alone, _ = hisan_token_attention(model, ids[-1:, :2], mask[-1:, :2])  # padding changes nothing
    torch.testing.assert_close(alone[0], weights[-1, :2])
    with pytest.raises(TypeError, match="HiSAN"):
        hisan_token_attention(clf.model, ids, mask)


def test_top_token_spans_merge_adjacent_heavy_tokens():
    weights = torch.tensor([0.05, 0.3, 0.2, 0.0, 0.1, 0.25, 0.02, 0.08, 0.0])
    assert top_token_spans(weights, max_spans=2, tokens_per_span=2) == [
        Ngram(1, 3, pytest.approx(0.5), 2), Ngram(4, 6, pytest.approx(0.35), 2)]  # fmt: skip
    assert top_token_spans(weights, max_spans=1, tokens_per_span=1) == [Ngram(1, 2, pytest.approx(0.3), 1)]
    assert top_token_spans(torch.zeros(4)) == []


def test_hisan_pages_highlight_its_attention_for_every_candidate(student):
    clf = student["clf"]
    model = _hisan(clf)
    texts = student["texts"][:2]
    ids, mask = _encode(clf, texts)
    probs = {t: p.numpy() for t, p in model.predict_proba(ids, attention_mask=mask).items()}
    accepted = {t: np.zeros(2, bool) for t in probs}
    data = build_review(model, clf.tokenizer, texts, ["a", "b"], probs, accepted, clf.task_labels, ngrams=3)
    assert data["attribution_kind"] == "hisan" and "attended" in data["attribution"]
    weights, _ = hisan_token_attention(model, ids, mask)
    for i, report in enumerate(data["reports"]):
        spans = [cand["spans"] for info in report["tasks"].values() for cand in info["top"]]
        assert all(s == spans[0] for s in spans) and len(spans[0]) == 3  # one set, shared by every candidate
        expected = top_token_spans(weights[i], max_spans=3)
        assert [s[2] for s in spans[0]] == pytest.approx([g.score for g in expected], abs=1e-4)


def test_select_for_review_lists_abstained_rows_in_order_with_a_cap():
    accepted = {"a": np.array([1, 0, 1, 1, 0], bool), "b": np.array([1, 1, 0, 1, 1], bool)}
    rows, listed = select_for_review(accepted)
    assert rows.tolist() == [1, 2, 4] and listed == 3
    rows, listed = select_for_review(accepted, max_reports=2)
    assert rows.tolist() == [1, 2] and listed == 3
    assert select_for_review(accepted, include_coded=True)[0].tolist() == [0, 1, 2, 3, 4]


def _page_data(html_text):
    block = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html_text, re.S)
    assert block is not None
    return json.loads(block.group(1))


def test_page_data_match_predict_proba_and_the_attribution(student):
    clf = student["clf"]
    texts = student["texts"][:5]
    ids, mask = _encode(clf, texts)
    probs = {t: p.numpy() for t, p in clf.model.predict_proba(ids, attention_mask=mask).items()}
    accepted = {t: np.zeros(len(texts), bool) for t in probs}
    data = build_review(
        clf.model, clf.tokenizer, texts, [f"r{i}" for i in range(5)], probs, accepted, clf.task_labels, ngrams=4
    )
    top3 = {t: np.argsort(-p, axis=1, kind="stable")[:, :3] for t, p in probs.items()}
    expected = attribute_reports(clf.model, ids, mask, {t: c.tolist() for t, c in top3.items()}, max_ngrams=4)
    enc = clf.tokenizer(texts, truncation=True, add_special_tokens=False, return_offsets_mapping=True)
    for i, report in enumerate(data["reports"]):
        assert report["text"] == texts[i]
        for task, info in report["tasks"].items():
            assert info["abstained"] and info["label"] is None
            assert [c["label"] for c in info["top"]] == [clf.task_labels[task][c] for c in top3[task][i]]
            np.testing.assert_allclose([c["p"] for c in info["top"]], probs[task][i, top3[task][i]], atol=1e-6)
            for c, cand in zip(top3[task][i], info["top"]):
                ngrams = expected[i][task][int(c)]
                assert [s[2] for s in cand["spans"]] == pytest.approx([g.score for g in ngrams], abs=1e-3)
                for (start, end, _), g in zip(cand["spans"], ngrams):
                    # the highlighted characters are exactly the window's tokens
                    assert (
                        clf.tokenizer(texts[i][start:end], add_special_tokens=False)["input_ids"]
                        == (enc["input_ids"][i][g.start : g.end])
                    )
    assert any(cand["spans"] for r in data["reports"] for t in r["tasks"].values() for cand in t["top"])
    assert data["attribution_kind"] == "mtcnn" and data["attribution"] and data["attribution_missing"] is None


def test_report_text_is_escaped_and_round_trips(student):
    clf = student["clf"]
    texts = [XSS, student["texts"][0]]
    ids, mask = _encode(clf, texts)
    probs = {t: p.numpy() for t, p in clf.model.predict_proba(ids, attention_mask=mask).items()}
    accepted = {t: np.zeros(2, bool) for t in probs}
    data = build_review(clf.model, clf.tokenizer, texts, ["<b>x</b>", "2"], probs, accepted, clf.task_labels)
    page = render_review_html(data, title="<script>alert(2)</script>")
    assert "alert(1)" in page and "<script>alert" not in page and "<img" not in page
    assert page.count("</script>") == 2  # the data block's and the page script's own
    assert "<title>&lt;script&gt;alert(2)&lt;/script&gt;</title>" in page
    back = _page_data(page)
    assert back["reports"][0]["text"] == XSS and back["reports"][0]["id"] == "<b>x</b>"
    assert "connect-src" not in page and "default-src 'none'" in page  # CSP: no network at all


def test_other_models_get_the_page_without_highlights():
    model = SimpleNamespace(config=SimpleNamespace(max_length=None))  # e.g. an ensemble: no highlights

    def tokenizer(texts, **kwargs):  # only the offsets are read when nothing is highlighted
        return {"input_ids": [[1, 2] for _ in texts], "offset_mapping": [[(0, 1), (2, 3)] for _ in texts]}

    probs = {"organ": np.array([[0.2, 0.8]])}
    data = build_review(model, tokenizer, ["a b"], ["r"], probs, {"organ": np.array([True])}, {"organ": ["x", "y"]})
    assert data["attribution"] is None and data["attribution_kind"] is None and "MtCNN" in data["attribution_missing"]
    info = data["reports"][0]["tasks"]["organ"]
    assert info == {"abstained": False, "label": "y", "top": [
        {"label": "y", "p": 0.8, "spans": []}, {"label": "x", "p": 0.2, "spans": []}]}  # fmt: skip


def test_review_command_lists_what_predict_abstains_on(student, tmp_path, capsys):
    model, data = str(student["model"]), str(student["test"])
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", model, "--data", data, "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    abstained = [r["id"] for r in lines if not r["auto_coded"] and "skipped" not in r]
    page = tmp_path / "review.html"
    assert main(["review", "--model", model, "--data", data, "--out", str(page)]) == 0
    got = _page_data(page.read_text())
    assert [r["id"] for r in got["reports"]] == abstained and abstained
    by_id = {r["id"]: r for r in lines}
    for report in got["reports"]:
        for task, info in report["tasks"].items():
            want = by_id[report["id"]]["tasks"][task]
            assert info["abstained"] == (want["label"] == "abstain")
            assert info["top"][0]["label"] == want["prediction"]
            assert info["top"][0]["p"] == pytest.approx(want["probability"], abs=1e-5)
    assert got["counts"]["empty"] == 1 and got["counts"]["predicted"] == len(lines) - 1
    capsys.readouterr()
    # capped, and refused without --overwrite; bad values are usage errors (exit 2) with one line
    assert main(["review", "--model", model, "--data", data, "--out", str(page), "--max-reports", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["review", "--model", model, "--data", data, "--out", str(page), "--max-reports", "2", "--overwrite"])
        == 0
    )
    assert len(_page_data(page.read_text())["reports"]) == min(2, len(abstained))
    for bad in (["--max-reports", "0"], ["--top-k", "0"]):
        capsys.readouterr()
        assert main(["review", "--model", model, "--data", data, "--out", str(tmp_path / "x.html"), *bad]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"reportkd review: error: {bad[0]} must be >= 1, got 0."
        ]
    assert main(["review", "--model", model, "--data", data, "--out", str(tmp_path / "x.txt")]) == 2
    assert (
        main(["review", "--model", model, "--data", model + "/missing.jsonl", "--out", str(tmp_path / "y.html")]) == 2
    )
