"""``reportkd review``: one self-contained HTML page of the reports the classifier abstained on, for a human coder.

    reportkd review --model runs/student --data new_reports.jsonl --out review.html

Per report: the text with the n-grams that drove each candidate highlighted (the MtCNN's max-pooled windows; see
:mod:`reportkd.text.mtcnn.attribution`), per task the top candidates with probabilities and whether it abstained, a
choice per task, filters by task ("abstained only"), and a download of the coder's choices as JSONL (one line per
report: ``{"id": …, "labels": {task: label | null}, "by": {task: "coder" | "model" | null}}``). No server, no
network: open the file in a browser.

Thresholds and temperatures are those ``reportkd predict`` uses (``--thresholds`` or ``MODEL_DIR/thresholds.json``);
without thresholds every prediction is accepted, so only ``--include-coded`` lists anything. The page lists at most
``--max-reports`` reports (input order; the page says how many were left out) and shows 20 per page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._classifier import (
    Classifier,
    ModelRun,
    add_data_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    load_classifier,
    model_options,
    run_model,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Classifier directory (highlights for an MtCNN or a HiSAN).")
    p.add_argument("--data", required=True, help="Reports to review (.jsonl[.gz], .csv, .parquet); labels not needed.")
    p.add_argument("--out", required=True, help="Output HTML page.")
    p.add_argument("--thresholds", help="Thresholds file (default: MODEL_DIR/thresholds.json when present).")
    p.add_argument(
        "--allow-other-weights", action="store_true",
        help="Use thresholds calibrated for other (or unknown) weights with the same label maps.",
    )  # fmt: skip
    p.add_argument("--max-reports", type=int, default=500, help="List at most this many reports (input order).")
    p.add_argument("--include-coded", action="store_true", help="Also list reports labelled on every task.")
    p.add_argument("--top-k", type=int, default=3, help="Candidates shown per task.")
    p.add_argument("--ngrams", type=int, default=5, help="Highlighted n-grams per candidate (0: no highlights).")
    p.add_argument("--title", help="Page title (default: 'Review: <data file name>').")
    add_overwrite_argument(p)
    add_data_arguments(p)
    add_model_arguments(p)


def write_review_page(
    out: str | Path,
    clf: Classifier,
    run: ModelRun,
    probs: dict[str, np.ndarray],
    accepted: dict[str, np.ndarray],
    data: str | Path,
    *,
    text_column: str = "text",
    max_reports: int | None = 500,
    include_coded: bool = False,
    top_k: int = 3,
    ngrams: int = 5,
    title: str | None = None,
) -> dict[str, Any]:
    """Writes the review page for a finished prediction run; returns the page's counts.

    Args:
        out: Output HTML file (checked by the caller: :func:`~._classifier.check_outputs`).
        clf: The classifier.
        run: :func:`~._classifier.run_model`'s result on ``data``.
        probs: Task → ``(N, C)`` probabilities of the run's rows (temperatures applied: ``Classifier.decisions``).
        accepted: Task → ``(N,)`` accepted mask.
        data: The reports file the run read (the page shows the texts).
        text_column: Its text column.
        max_reports: At most this many reports on the page.
        include_coded: Also list reports labelled on every task.
        top_k: Candidates per task.
        ngrams: Highlighted n-grams per candidate.
        title: Page title.
    """
    from reportkd.data import read_records
    from reportkd.text.mtcnn.review import build_review, select_for_review, write_review_html

    rows, listed = select_for_review(accepted, include_coded=include_coded, max_reports=max_reports)
    wanted = set(rows.tolist())
    texts: dict[int, str] = {}
    for record, (_, row) in zip(read_records(data), run.order):  # order follows the records of the file
        if row is not None and row in wanted:
            texts[row] = record[text_column]
    preds = run.predictions
    counts = {
        "predicted": len(preds),
        "abstained": int((~np.all(np.stack(list(accepted.values())), axis=0)).sum()),
        "listed": listed,
        "shown": len(rows),
        "empty": len(run.skipped_ids),
    }
    page = build_review(
        clf.model, clf.tokenizer, [texts[r] for r in rows], [preds.ids[r] for r in rows],
        {t: p[rows] for t, p in probs.items()}, {t: a[rows] for t, a in accepted.items()}, clf.task_labels,
        thresholds=clf.thresholds.thresholds if clf.thresholds is not None else None, top_k=top_k, ngrams=ngrams,
        meta={"model": clf.model_id, "source_name": Path(data).name, "counts": counts, "include_coded": include_coded},
    )  # fmt: skip
    write_review_html(out, page, title=title or f"Review: {Path(data).name}")
    return counts


def run(args: argparse.Namespace) -> int:
    if args.max_reports < 1:
        raise ValueError(f"--max-reports must be >= 1, got {args.max_reports}.")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}.")
    if args.ngrams < 0:
        raise ValueError(f"--ngrams must be >= 0 (0: no highlights), got {args.ngrams}.")
    if not args.out.lower().endswith((".html", ".htm")):
        raise ValueError(f"--out {args.out}: give an .html file name.")
    from reportkd.abstention import THRESHOLDS_NAME

    check_outputs(
        {"--out": args.out},
        {
            "--data": args.data,
            "--model": args.model,
            "--thresholds": args.thresholds or f"{args.model}/{THRESHOLDS_NAME}",
        },
        overwrite=args.overwrite,
    )
    clf = load_classifier(args.model, thresholds=args.thresholds or "auto", **model_options(args))
    if clf.thresholds is None:
        print(
            f"warning: no thresholds for {args.model} (give --thresholds or run `reportkd calibrate`): every "
            "prediction is accepted, so no report abstains.",
            file=sys.stderr,
        )
    result = run_model(clf, args.data, args, require_labels=False)
    result.predictions.validate()
    probs, accepted = clf.decisions(result.predictions.probs)
    counts = write_review_page(
        args.out, clf, result, probs, accepted, args.data, text_column=args.text_column,
        max_reports=args.max_reports, include_coded=args.include_coded, top_k=args.top_k, ngrams=args.ngrams,
        title=args.title,
    )  # fmt: skip
    what = "reports" if args.include_coded else "abstained reports"
    capped = (
        f" (first {counts['shown']} of {counts['listed']}: --max-reports)"
        if counts["shown"] < counts["listed"]
        else ""
    )
    print(
        f"Review page: {counts['shown']} {what}{capped}; {counts['abstained']} of {counts['predicted']} reports "
        f"abstained on at least one task → {args.out}"
    )
    return 0
