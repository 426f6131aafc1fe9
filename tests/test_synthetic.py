import gzip
import json
import re
import statistics
import time
from collections import Counter

import pytest

from reportkd.synthetic import (
    LABEL_SPACES,
    NOISY_FIELDS,
    ORGAN_HISTOLOGIES,
    ORGAN_NAMES,
    SCHEMA_KEYS,
    SYNOPTIC_FIELDS,
    SYNTHETIC_TASKS,
    corrupt_some,
    generate_reports,
    generate_reports_with_truth,
    parse_synoptic,
    read_reports,
    synoptic_line,
    write_reports,
)
from reportkd.synthetic_vocab import ORGAN_BY_NAME

N = 1500


@pytest.fixture(scope="module")
def corpus():
    return generate_reports_with_truth(N, seed=7)


@pytest.fixture(scope="module")
def clean_corpus():
    return generate_reports_with_truth(400, seed=11, ocr_noise=0.0)


def test_same_seed_same_corpus_other_seed_other_corpus():
    a, b, c = (generate_reports(60, seed=s) for s in (3, 3, 4))
    assert a == b
    assert sum(x["text"] == y["text"] for x, y in zip(a, c)) == 0
    assert {r["id"] for r in a}.isdisjoint(r["id"] for r in c)


def test_label_spaces_match_the_tcga_vocabularies():
    assert tuple(LABEL_SPACES) == SYNTHETIC_TASKS
    assert LABEL_SPACES["laterality"] == ("left", "right", "bilateral", "midline", "unknown")
    assert LABEL_SPACES["behavior"] == ("malignant", "benign", "in_situ", "uncertain", "unknown")
    assert LABEL_SPACES["grade"] == ("G1", "G2", "G3", "G4", "unknown")
    assert LABEL_SPACES["t_stage"] == ("T1", "T2", "T3", "T4", "Tis", "TX", "unknown")
    assert len(ORGAN_NAMES) == 12 and "head_and_neck" in ORGAN_NAMES
    assert {"KIRC", "KIRP", "KICH", "LUAD", "LUSC", "GBM", "LGG", "COAD", "READ", "UCEC", "UCS", "CHOL"} <= set(
        LABEL_SPACES["cancer_type"]
    )
    assert all(h == h.lower() or "b-cell" in h for h in LABEL_SPACES["histology"])
    for task, space in LABEL_SPACES.items():
        assert len(space) == len(set(space)), task


def test_schema_and_values(corpus):
    records, truths = corpus
    assert len(records) == len(truths) == N
    ids = set()
    for r in records:
        assert tuple(r) == SCHEMA_KEYS
        assert r["llm_output"] is None and r["raw_labels"] is None
        for task in SYNTHETIC_TASKS:
            assert r[task] in LABEL_SPACES[task], (task, r[task])
        ctypes = {h.cancer_type for h in ORGAN_BY_NAME[r["organ"]].histologies}
        assert r["cancer_type"] in ctypes | ({"READ"} if r["organ"] == "colorectal" else set())
        assert re.fullmatch(r"[0-9a-f]{16}", r["id"])
        assert re.fullmatch(r"TCGA-[0-9A-Z]{2}-[0-9A-Z]{4}", r["patient"])
        assert r["source_file"].startswith(r["patient"]) and r["source_file"].lower().endswith(".pdf")
        ids.add(r["id"])
    assert len(ids) == N and len({r["patient"] for r in records}) == N
    # every class of the small label spaces occurs, and all organs
    for task in ("organ", "grade", "laterality"):
        assert set(LABEL_SPACES[task]) - {"midline"} <= {r[task] for r in records}, task
    assert {"T1", "T2", "T3", "T4", "Tis", "unknown"} <= {r["t_stage"] for r in records}
    assert {"malignant", "benign", "in_situ", "uncertain", "unknown"} == {r["behavior"] for r in records}


def test_realistic_label_proportions(corpus):
    records, _ = corpus
    share = {t: Counter(r[t] for r in records) for t in ("organ", "behavior", "grade", "t_stage", "histology")}
    assert 0.75 < share["behavior"]["malignant"] / N < 0.95
    assert 0.2 < share["grade"]["unknown"] / N < 0.5 and 0.25 < share["t_stage"]["unknown"] / N < 0.6
    assert 0.03 < share["histology"]["unknown"] / N < 0.15
    assert share["organ"]["kidney"] > 3 * share["organ"]["pancreas"]  # as skewed as the real organ files
    brain = [r for r in records if r["organ"] == "brain"]
    assert sum(r["t_stage"] != "unknown" for r in brain) < 0.2 * len(brain)  # no TNM for CNS tumours
    pancreas = [r for r in records if r["organ"] == "pancreas"]
    assert sum(r["laterality"] == "unknown" for r in pancreas) > 0.7 * len(pancreas)


def test_synoptic_line_parses_back_into_the_fields(corpus):
    records, _ = corpus
    for r in records:
        assert r["synoptic"] == synoptic_line(r)
        assert parse_synoptic(r["synoptic"]) == {k: r[k] for k in SYNOPTIC_FIELDS}
    assert records[0]["synoptic"].startswith(f"organ: {records[0]['organ']} | histology: ")
    with pytest.raises(ValueError):
        parse_synoptic("organ kidney")


def test_label_noise_rate_and_where_it_falls(corpus):
    records, truths = corpus
    for f in NOISY_FIELDS:
        flipped = [f in t["flipped"] for t in truths]
        assert [r[f] != t[f] for r, t in zip(records, truths)] == flipped  # a flip always changes the value
        assert abs(sum(flipped) / N - 0.08) < 0.025, f
    for f in ("organ", "cancer_type"):
        assert all(r[f] == t[f] for r, t in zip(records, truths))
    # instance dependent: ambiguous statements are flipped several times more often than clear ones
    clear = [f in t["flipped"] for t in truths for f in NOISY_FIELDS if t["modes"][f] == "clear"]
    vague = [
        f in t["flipped"] for t in truths for f in NOISY_FIELDS if t["modes"][f] in ("weak", "hedged", "conflict")
    ]
    assert len(vague) > 0.1 * (len(clear) + len(vague))
    assert sum(vague) / len(vague) > 3 * sum(clear) / len(clear)


def test_label_noise_level_is_respected_and_leaves_text_alone():
    clean, t0 = generate_reports_with_truth(500, seed=5, label_noise=0.0)
    noisy, t1 = generate_reports_with_truth(500, seed=5, label_noise=0.25)
    assert all(not t["flipped"] for t in t0)
    assert all(r[k] == t[k] for r, t in zip(clean, t0) for k in SYNTHETIC_TASKS)
    assert [r["text"] for r in clean] == [r["text"] for r in noisy]
    rate = sum(len(t["flipped"]) for t in t1) / (500 * len(NOISY_FIELDS))
    assert 0.2 < rate < 0.3
    _, t2 = generate_reports_with_truth(500, seed=5, label_noise=0.05)
    assert all(set(a["flipped"]) <= set(b["flipped"]) for a, b in zip(t2, t1))  # nested noise levels
    # flips are plausible: adjacent grades and stages
    for r, t in zip(noisy, t1):
        for f in ("grade", "t_stage"):
            if f in t["flipped"] and r[f][1:].isdigit() and t[f][1:].isdigit():
                assert abs(int(r[f][1]) - int(t[f][1])) == 1


def test_histology_belongs_to_the_organ(corpus):
    records, truths = corpus
    for r, t in zip(records, truths):
        allowed = set(ORGAN_HISTOLOGIES[r["organ"]]) | {"unknown"}
        assert t["histology"] in allowed
        assert r["histology"] in allowed  # flipped values are confusable types of the same organ
    kidney = Counter(t["histology"] for t in truths if t["organ"] == "kidney")
    assert kidney.most_common(1)[0][0] == "renal cell carcinoma, clear cell type"
    assert len(kidney) >= 5  # common and rare types


def test_ocr_noise_changes_text_not_labels():
    kw = dict(seed=9, label_noise=0.1)
    clean, noisy = generate_reports(300, ocr_noise=0.0, **kw), generate_reports(300, ocr_noise=0.05, **kw)
    for a, b in zip(clean, noisy):
        assert {k: v for k, v in a.items() if k != "text"} == {k: v for k, v in b.items() if k != "text"}
    assert sum(a["text"] != b["text"] for a, b in zip(clean, noisy)) > 0.95 * len(clean)
    assert not any("Page 1 of" in r["text"] for r in clean)
    assert sum("Page 1 of" in r["text"] for r in noisy) > 0.2 * len(noisy)
    lost = []
    for a, b in zip(clean, noisy):
        words, kept = a["text"].split(), Counter(b["text"].split())
        lost.append(sum((Counter(words) - kept).values()) / len(words))
    assert 0.02 < statistics.mean(lost) < 0.15  # roughly ocr_noise of the words are damaged


def test_clearly_stated_fields_appear_in_the_text(clean_corpus):
    records, truths = clean_corpus
    for r, t in zip(records, truths):
        text, organ = r["text"].lower(), ORGAN_BY_NAME[t["organ"]]
        hist = next((h for h in organ.histologies if h.label == t["histology"]), None)
        if t["modes"]["histology"] == "clear":
            assert any(s.lower() in text for s in hist.surface), (t["histology"], r["text"])
        elif t["modes"]["histology"] == "weak":
            assert t["histology"] in text
        if t["modes"]["laterality"] == "clear" and t["laterality"] in ("left", "right"):
            assert re.search(rf"\b({t['laterality']}|{'lt' if t['laterality'] == 'left' else 'rt'})\b", text)
        if t["modes"]["t_stage"] == "clear" and t["t_stage"] not in ("unknown", "Tis"):
            assert re.search(rf"\b(p|y?p?){t['t_stage'].lower()}", text), (t["t_stage"], r["text"])
        if t["info"] == "full":
            assert any(w in text for w in organ.words + tuple(p.split(",")[0].lower() for p in organ.plain))


def test_difficulty_mix(corpus):
    _, truths = corpus
    modes = Counter(t["modes"]["histology"] for t in truths)
    assert 0.5 < modes["clear"] / N < 0.85 and all(modes[m] > 0.02 * N for m in ("weak", "hedged", "conflict"))
    info = Counter(t["info"] for t in truths)
    assert 0.02 < info["none"] / N < 0.12 and info["sparse"] > 0


def test_lengths_like_real_reports(clean_corpus, corpus):
    for records in (clean_corpus[0], corpus[0]):
        words = sorted(len(r["text"].split()) for r in records)
        n = len(words)
        assert 120 <= words[int(0.05 * n)] and words[int(0.95 * n)] <= 950 and words[-1] < 1200
        assert 250 < statistics.median(words) < 550


def test_organ_subset_and_bad_arguments():
    records = generate_reports(80, organs=["kidney", "lung"])
    assert {r["organ"] for r in records} == {"kidney", "lung"}
    assert {r["cancer_type"] for r in records} <= {"KIRC", "KIRP", "KICH", "LUAD", "LUSC"}
    with pytest.raises(ValueError):
        generate_reports(5, organs=["breast"])
    with pytest.raises(ValueError):
        generate_reports(5, label_noise=1.5)
    assert generate_reports(0) == []


def test_corrupt_some_and_empty_fraction():
    records = generate_reports(200, seed=2)
    before = json.dumps(records)
    bad = corrupt_some(records, 0.1, seed=1)
    assert json.dumps(records) == before  # input untouched
    broken = [r for r in bad if len(r["text"].split()) < 5]
    assert len(broken) == 20
    for r in broken:
        assert all(r[f] == "unknown" for f in NOISY_FIELDS) and r["synoptic"] == synoptic_line(r)
    assert corrupt_some(records, 0.1, seed=1) == bad
    via_param = generate_reports(200, seed=2, empty_fraction=0.1)
    assert sum(len(r["text"].split()) < 5 for r in via_param) == 20
    with pytest.raises(ValueError):
        corrupt_some(records, 1.5)


@pytest.mark.parametrize("name", ["reports.jsonl", "sub/dir/reports.jsonl.gz"])
def test_write_reports_round_trip(tmp_path, name):
    records = generate_reports(50, seed=4)
    path = write_reports(tmp_path / name, records)
    assert path == tmp_path / name and read_reports(path) == records
    raw = path.read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        assert [json.loads(x) for x in gzip.decompress(raw).decode().splitlines()] == records
        assert write_reports(tmp_path / "again.jsonl.gz", records).read_bytes() == raw  # reproducible bytes
    else:
        assert raw.decode().count("\n") == len(records)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_write_reports_is_atomic(tmp_path):
    path = tmp_path / "reports.jsonl.gz"
    with pytest.raises(TypeError):
        write_reports(path, [{"a": 1}] * 1000 + [{"b": object()}])
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary left behind
    write_reports(path, [{"a": 1}])
    with pytest.raises(TypeError):
        write_reports(path, [{"a": 2}, {"b": object()}])
    assert read_reports(path) == [{"a": 1}]  # the old file survives a failed rewrite
    assert [p.name for p in tmp_path.iterdir()] == ["reports.jsonl.gz"]


def test_fast_enough():
    start = time.perf_counter()
    generate_reports(500, seed=1)
    assert time.perf_counter() - start < 3.0  # 3,000 take about 1 s; generous for loaded machines
