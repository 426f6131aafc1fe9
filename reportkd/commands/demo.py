"""``reportkd demo``: the main job, offline by default.

With no arguments it generates a synthetic pathology-report corpus, trains a teacher ensemble of multitask CNNs,
a hard-label baseline and an ensemble-distilled student, calibrates abstention thresholds at 97% accuracy on a
calibration split and prints per task accuracy and coverage on the test split. ``--data FILE`` runs the same job
on real reports (e.g. the TCGA reports JSONL). The job is :func:`reportkd.text.mtcnn.job.run_mtcnn_job`; a killed
run resumes stage by stage when rerun with the same options.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reportkd.text.mtcnn.arguments import MtCNNJobArguments

DEFAULT_TASKS = ("organ", "cancer_type", "histology", "grade", "t_stage", "laterality", "behavior")
# added to the default tasks when --data has the column (the TCGA reports: 27 morphology families)
OPTIONAL_TASKS = ("histology_group",)
# the default teacher: 8 MtCNNs. benchmarks/abstention_tcga.py (issue 13) found a 4 MtCNN + 4 HiSAN teacher stronger
# as an ensemble, but its student no better than the MtCNN teacher's (benchmarks/results/abstention_tcga_mixed*.md)
DEFAULT_MEMBERS = 8
# the student trains this many times --epochs (the baseline and teacher members: --epochs). In the TCGA benchmark
# the 16-epoch soft-label student beats the 8-epoch one on cancer_type at 97% (+0.015 +- 0.005 coverage, 3 seeds x
# 20 halvings; benchmarks/results/abstention_tcga_student_epochs.md) and the synthetic demo's on 5 of 7 tasks
STUDENT_EPOCHS_FACTOR = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        help="Reports file (.jsonl[.gz], .csv, .parquet) or a datasets spec (hf:ORG/NAME[:SPLIT], json:GLOB[:SPLIT]). "
        "Default: a generated synthetic corpus.",
    )
    p.add_argument("--output-dir", default="reportkd-demo", help="Where models, soft labels and results go.")
    p.add_argument(
        "--tasks",
        default=None,
        help=f"Comma-separated label columns (default: {','.join(DEFAULT_TASKS)}; plus histology_group if --data has "
        "it).",
    )
    p.add_argument("--text-column", default="text", help="Column with the report text.")
    p.add_argument(
        "--members",
        type=int,
        default=None,
        help=f"Teacher ensemble size: this many MtCNNs (default {DEFAULT_MEMBERS}; or --teacher-archs).",
    )
    p.add_argument(
        "--teacher-archs",
        default=None,
        help="Mixed teacher instead of --members MtCNNs: groups ARCH:MEMBERS[(name=value,...)] separated by commas, "
        "e.g. 'mtcnn:4,hisan:4' or 'mtcnn:4(kernel_sizes=2/3,dropout=0.3),hisan:4(dropout=0.2)'. Settings: "
        "embedding_dim, dropout, kernel_sizes, num_filters (mtcnn); attention_heads, attention_dim_per_head, "
        "words_per_line (hisan); seed, epochs.",
    )
    p.add_argument(
        "--student-arch",
        default="mtcnn",
        help="Student and baseline architecture: mtcnn or hisan, optionally with settings, e.g. 'hisan(dropout=0.2)'.",
    )
    p.add_argument(
        "--folds", type=int, default=1, help="Out-of-fold soft labels over this many folds (1 = off: in-sample)."
    )
    p.add_argument("--epochs", type=int, default=8, help="Epochs for every model (same budget).")
    p.add_argument(
        "--student-epochs",
        type=int,
        default=None,
        help=f"Epochs of the distilled student (default {STUDENT_EPOCHS_FACTOR}x --epochs: a patient student).",
    )
    p.add_argument(
        "--alpha", type=float, default=1.0, help="Weight of soft labels in the student loss (1: soft only)."
    )
    p.add_argument(
        "--consistent-teaching",
        action="store_true",
        help="The teacher labels an augmented view of each report on the fly; the student matches it on that view.",
    )
    p.add_argument("--unlabelled", help="Reports file without labels: extra transfer data for the student.")
    p.add_argument("--counterfactuals", default="none", help="CoD transfer data: none, add or equal.")
    p.add_argument("--temperature", type=float, default=1.0, help="Distillation temperature.")
    p.add_argument("--target-accuracy", type=float, default=0.97, help="Abstention target accuracy.")
    p.add_argument("--reports", type=int, default=2000, help="Synthetic corpus size (without --data).")
    p.add_argument("--max-length", type=int, default=512, help="Tokens kept per report.")
    p.add_argument("--embedding-dim", type=int, default=64, help="Word embedding size (paper: 300).")
    p.add_argument("--num-filters", type=int, default=64, help="Filters per window (paper: 300).")
    p.add_argument("--batch-size", type=int, default=32, help="Batch size.")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate.")
    p.add_argument("--min-class-count", type=int, default=5, help="Rarer classes become 'other'.")
    p.add_argument("--min-words", type=int, default=1, help="Skip reports with fewer words (counted).")
    p.add_argument("--unknown-as-missing", action="store_true", help="Treat label 'unknown' as missing.")
    p.add_argument("--seed", type=int, default=0, help="Seed for data, splits and models.")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the outputs of an earlier run in --output-dir (without it a non-empty folder is refused, "
        "except an interrupted run of the same settings, which resumes stage by stage).",
    )


def default_tasks(data: str | None) -> list[str]:
    """The demo's tasks: :data:`DEFAULT_TASKS`, plus :data:`OPTIONAL_TASKS` the reports file has (first record)."""
    tasks = list(DEFAULT_TASKS)
    if data:
        from reportkd.data import iter_records

        try:
            first = next(iter_records(data, chunk_size=1), [])
        except (OSError, ValueError):
            return tasks  # the job reports the unreadable file with its own message
        tasks += [t for t in OPTIONAL_TASKS if first and t in first[0]]
    return tasks


def job_arguments(args: argparse.Namespace) -> MtCNNJobArguments:
    """The job's ``MtCNNJobArguments`` from the demo's flags (default teacher: :data:`DEFAULT_MEMBERS` MtCNNs;
    ``--teacher-archs``: groups of MtCNNs / HiSANs; both at once is refused; the student trains
    :data:`STUDENT_EPOCHS_FACTOR` x ``--epochs`` unless ``--student-epochs`` says otherwise).

    Args:
        args: The parsed ``reportkd demo`` flags.
    """
    from reportkd.text.mtcnn.arguments import MtCNNJobArguments

    tasks = default_tasks(args.data) if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.members is not None and args.teacher_archs is not None:
        raise ValueError(
            "Give --members (MtCNNs only) or --teacher-archs, not both; e.g. --teacher-archs mtcnn:4,hisan:4."
        )
    student_epochs = args.student_epochs
    if student_epochs is None and args.epochs >= 1:  # a bad --epochs gets its own error in run()
        student_epochs = STUDENT_EPOCHS_FACTOR * args.epochs
    return MtCNNJobArguments(
        tasks=tasks,
        consistent_teaching=args.consistent_teaching,
        unlabelled=args.unlabelled,
        counterfactuals=args.counterfactuals,
        text_column=args.text_column,
        members=DEFAULT_MEMBERS if args.members is None else args.members,
        teacher_archs=args.teacher_archs,
        student_epochs=student_epochs,
        student_arch=args.student_arch,
        folds=args.folds,
        alpha=args.alpha,
        temperature=args.temperature,
        target_accuracy=args.target_accuracy,
        max_length=args.max_length,
        embedding_dim=args.embedding_dim,
        num_filters=args.num_filters,
        min_class_count=args.min_class_count,
        min_words=args.min_words,
        unknown_as_missing=args.unknown_as_missing,
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from reportkd.text.mtcnn.job import default_training_args, run_mtcnn_job
    from reportkd.text.mtcnn.results import format_table

    job = job_arguments(args)  # validated here, before any data is read or model trained
    if args.epochs < 1 or args.batch_size < 1 or not args.learning_rate > 0:
        raise ValueError("--epochs and --batch-size must be >= 1 and --learning-rate > 0.")
    out = Path(args.output_dir)
    training_args = default_training_args(
        out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed,
    )  # fmt: skip
    if args.data:
        from reportkd.data import report_source

        source, origin = report_source(args.data), args.data  # a file, or a datasets spec loaded as a Dataset
    else:
        from reportkd.synthetic import generate_reports

        source = generate_reports(args.reports, seed=args.seed)
        origin = f"synthetic corpus ({args.reports} reports, seed {args.seed})"
    start = time.perf_counter()
    results = run_mtcnn_job(source, job, training_args, overwrite=args.overwrite, data_description=origin)
    elapsed = time.perf_counter() - start
    d = results["data"]
    print(
        f"\nData: {origin}: {d['kept']} reports kept, {d['skipped_empty']} skipped (empty/short text); "
        f"split {d['train']}/{d['calibration']}/{d['test']} train/calibration/test."
    )
    teacher = f"{job.members} MtCNNs" if job.teacher_archs is None else f"{job.teacher_archs} ({job.members} members)"
    print(
        f"Teacher: {teacher} ("
        + (f"{job.folds}-fold out-of-fold soft labels" if job.folds > 1 else "in-sample soft labels")
        + f", {results['teacher']['wall_time_s'] or 0:.0f} s); "
        f"student {job.student_arch} α={job.alpha}, T={job.temperature}, {job.student_epochs or args.epochs} epochs; "
        "thresholds calibrated at "
        f"{job.target_accuracy:.0%} on the calibration split, reported on the test split.\n"
    )
    print(format_table(results))
    # the saved student must load with AutoModel and predict exactly as in memory
    student_dir = out / "student"
    model = AutoModel.from_pretrained(student_dir).eval()
    tok = AutoTokenizer.from_pretrained(student_dir)
    probe = tok(["Right kidney, radical nephrectomy: clear cell renal cell carcinoma, grade 2."], return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"]).logits
    print(
        f"\nSaved student → {student_dir} and baseline → {out / 'baseline'}, each with thresholds.json "
        f"(AutoModel.from_pretrained loads them; tasks: {', '.join(logits)}). Results → {out / 'results.json'}. "
        f"Took {elapsed / 60:.1f} min."
    )
    if args.verbose:
        print(json.dumps(results["models"]["student"], indent=1)[:2000])
    return 0
