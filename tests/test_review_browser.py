"""The review page in headless Chromium: it renders, the task filter hides the right reports, the export is valid
JSONL with the coder's choices, and hostile report text stays text.

The page's ``#selftest=TASK`` hook drives the UI as a user would (select the task, tick the runner-up candidate of
every matching report, press download) and writes what it saw into ``<pre id="selftest-…">``; the test reads the DOM
that ``chromium --headless --dump-dom`` prints. Skipped when no Chromium/Chrome binary is installed
(Debian: ``apt-get install chromium``; CI installs it).
"""

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from report_tiny import calibrated_student

from reportkd.commands._classifier import load_classifier
from reportkd.text.mtcnn.review import build_review, write_review_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium/Chrome binary on PATH (install Debian's `chromium` to run the browser test)"
)

XSS = '</script><script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"> kidney'


def _dump_dom(page, fragment: str, profile) -> str:
    url = page.resolve().as_uri() + fragment
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--dump-dom", url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _pre(dom: str, name: str) -> str:
    found = re.search(rf'<pre id="{name}"[^>]*>(.*?)</pre>', dom, re.S)
    assert found is not None, f"no #{name} in the page: the page script did not run to the end"
    return html.unescape(found.group(1))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A page of 9 reports (one hostile): organ abstains on every other report, grade on all of them."""
    root = tmp_path_factory.mktemp("review_browser")
    student = calibrated_student(root)
    clf = load_classifier(student["model"])
    texts = [XSS] + student["texts"][:8]
    ids = [f"r{i}" for i in range(len(texts))]
    enc = clf.tokenizer(texts, truncation=True, add_special_tokens=False, padding=True, return_tensors="pt")
    probs = {t: p.numpy() for t, p in clf.model.predict_proba(enc["input_ids"], enc["attention_mask"]).items()}
    n = len(texts)
    accepted = {t: np.ones(n, bool) for t in probs}
    accepted["organ"] = np.arange(n) % 2 == 1  # organ abstains on r0, r2, r4, r6, r8
    accepted["behavior"] = np.zeros(n, bool)  # so every report is on the page
    data = build_review(clf.model, clf.tokenizer, texts, ids, probs, accepted, clf.task_labels)
    path = write_review_html(root / "review.html", data, title="Review <test>")
    return {"path": path, "data": data, "profile": root / "profile", "accepted": accepted}


def test_page_renders_filters_and_exports_jsonl(page):
    dom = _dump_dom(page["path"], "#selftest=organ", page["profile"])
    result = json.loads(_pre(dom, "selftest-result"))
    data = page["data"]
    reports = data["reports"]
    assert result["rendered"] == len(reports) == 9
    organ_abstained = [r["id"] for r in reports if r["tasks"]["organ"]["abstained"]]
    assert result["matching"] == organ_abstained == ["r0", "r2", "r4", "r6", "r8"]
    assert result["visible"] == 5 and result["matching_all"] == 9
    assert result["blob"] is True and result["marks"] > 0
    lines = _pre(dom, "selftest-export").splitlines()
    rows = [json.loads(line) for line in lines]  # valid JSONL: one object per line
    assert [r["id"] for r in rows] == [r["id"] for r in reports]
    by_id = {r["id"]: r for r in reports}
    for row in rows:
        assert set(row["labels"]) == set(data["tasks"]) == set(row["by"])
        organ = by_id[row["id"]]["tasks"]["organ"]
        if row["id"] in organ_abstained:  # the self-test ticked the runner-up candidate
            assert row["labels"]["organ"] == organ["top"][1]["label"] == result["chosen"][row["id"]]
            assert row["by"]["organ"] == "coder"
        else:  # the model's label, which the coder left alone
            assert row["labels"]["organ"] == organ["top"][0]["label"] and row["by"]["organ"] == "model"
        assert row["labels"]["behavior"] is None and row["by"]["behavior"] is None  # abstained, not chosen


def test_hostile_report_text_stays_text(page):
    dom = _dump_dom(page["path"], "", page["profile"])
    assert "<img" not in dom and "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "<title>Review &lt;test&gt;</title>" in dom
    # the report's text box holds exactly its characters: only highlight and context elements inside
    box = re.search(r'<pre class="text">(.*?)</pre>', dom, re.S).group(1)
    assert set(re.findall(r"</?([a-z]+)", box)) <= {"mark", "span"}
    assert html.unescape(re.sub(r"<[^>]*>", "", box)) == XSS
    assert dom.count("<article") == 9
