"""``reportkd evaluate KIND``: one entry point for evaluating every model family the toolkit produces.

    reportkd evaluate classifier --model DIR --data FILE          # per-task accuracy / balanced acc / F1 / AUROC
    reportkd evaluate generations --predictions FILE              # ROUGE-L, BLEU, synoptic field accuracy
    reportkd evaluate clip --model DIR [--data synthetic:n=600]   # retrieval R@k, zero-shot, linear probe
    reportkd evaluate features --features DIR --labels FILE       # probes on mean-pooled / patch features
    reportkd evaluate slide --model DIR --features DIR --labels FILE   # probes on slide-encoder embeddings

Slide probes (``--probes linear,knn,abmil,retrieval``): logistic regression with C chosen on validation, kNN,
gated ABMIL on patch features, slide retrieval Acc@K / mAP@K; plus zero-shot and slide-report retrieval for an
aligned slide-report model. The labels file (CSV / JSONL) has ``slide_id,label[,split][,report]``.

Every kind prints a markdown table and writes JSON with ``--out`` (checked before anything runs: never an input, an
existing file only with ``--overwrite``). Classifier and slide models load without running code shipped in the
model folder (``--trust-remote-code`` to opt in) and, for classifiers, from safetensors only (``--allow-pickle``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reportkd.registry import Registry

EVALUATORS: Registry[Any] = Registry("evaluator")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    c = sub.add_parser("classifier", help="Multitask report classifier (a directory saved by reportkd demo).")
    c.add_argument("--model", required=True, help="Classifier directory.")
    c.add_argument("--data", required=True, help="Labelled reports: a file or a datasets spec (hf:ORG/NAME[:SPLIT]).")
    c.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for confidence intervals.")
    from ._classifier import add_data_arguments, add_model_arguments

    add_data_arguments(c)
    add_model_arguments(c)
    g = sub.add_parser("generations", help="Generated synoptic lines against references (JSONL).")
    g.add_argument("--predictions", required=True, help="JSONL with one generation and its reference per line.")
    g.add_argument("--prediction-key", default="prediction", help="Key of the generated text.")
    g.add_argument("--reference-key", default="reference", help="Key of the reference text.")
    v = sub.add_parser("clip", help="open_clip model: retrieval, zero-shot, linear probe.")
    v.add_argument("--model", required=True, help="Saved student dir, open_clip name or hf-hub: id.")
    v.add_argument("--data", default="synthetic:n=600,size=64,seed=1000", help="Image-caption data source.")
    v.add_argument("--batch-size", type=int, default=64, help="Pairs per forward pass.")
    v.add_argument("--device", default="cpu", help="Device.")
    f = sub.add_parser("features", help="Patch features (reportkd extract): linear / kNN / ABMIL / retrieval.")
    m = sub.add_parser("slide", help="Saved slide encoder or slide-report model on features files.")
    m.add_argument("--model", required=True, help="Folder of a SlideEncoderModel or SlideReportModel.")
    m.add_argument(
        "--abmil-input",
        choices=("tokens", "features"),
        default="tokens",
        help="ABMIL on the encoder's patch tokens or on the raw patch features.",
    )
    m.add_argument("--templates", nargs="+", default=None, help="Zero-shot prompt templates with {} (aligned models).")
    m.add_argument("--device", default="cpu", help="Device of the slide encoder.")
    m.add_argument(
        "--trust-remote-code", action="store_true",
        help="Run Python code shipped in the model folder (auto_map in its config). Only for folders you trust.",
    )  # fmt: skip
    for s in (f, m):
        s.add_argument("--features", required=True, help="Folder of <slide_id>.safetensors features files.")
        s.add_argument("--labels", required=True, help="CSV / TSV / JSONL with slide_id,label[,split][,report].")
        s.add_argument("--probes", default="linear,knn,abmil,retrieval", help="Comma-separated probes.")
        s.add_argument("--k", type=int, default=20, help="kNN neighbours.")
        s.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for confidence intervals.")
        s.add_argument("--seed", type=int, default=0, help="Seed of generated splits, ABMIL and bootstrap.")
    for s in (c, g, v, f, m):
        s.add_argument("--out", help="Write the metrics as JSON here.")
        s.add_argument("--overwrite", action="store_true", help="Replace the --out file if it exists.")


@EVALUATORS.register("classifier")
def evaluate_classifier(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from reportkd.evaluation import classification_metrics, format_metrics_table

    from ._classifier import get_predictions

    preds, _, _ = get_predictions(args, model=args.model, predictions=None, data=args.data, thresholds=None)
    results = {
        task: classification_metrics(preds.probs[task], preds.labels[task], n_bootstrap=args.bootstrap)
        for task in preds.task_labels
    }
    return results, format_metrics_table(results)


@EVALUATORS.register("generations")
def evaluate_generations_file(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from reportkd.metrics import evaluate_generations

    path = Path(args.predictions)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file {path} does not exist.")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    missing = [k for k in (args.prediction_key, args.reference_key) if rows and k not in rows[0]]
    if missing:
        raise ValueError(f"{path} lines lack key(s) {missing}; they have {sorted(rows[0])}. Use --*-key options.")
    metrics = evaluate_generations([r[args.prediction_key] for r in rows], [r[args.reference_key] for r in rows])
    table = "| metric | value |\n|---|---|\n" + "\n".join(
        f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)
    )
    return metrics, table


@EVALUATORS.register("clip")
def evaluate_clip_model(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from reportkd.vlm.evaluation import evaluate_clip

    metrics = evaluate_clip(args.model, args.data, batch_size=args.batch_size, device=args.device)
    table = "| metric | value |\n|---|---|\n" + "\n".join(
        f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)
    )
    return metrics, table


def _slide_probes(args: argparse.Namespace, embeddings, patches, loaded, **kwargs) -> tuple[dict[str, Any], str]:
    from reportkd.vlm.slide.evaluation import SlideEmbeddings, evaluate_slide_embeddings, format_slide_results

    data = SlideEmbeddings(
        slide_ids=[s.slide_id for s in loaded["slides"]], embeddings=embeddings, labels=loaded["labels"],
        splits=loaded["splits"], classes=loaded["classes"], patches=patches, reports=loaded["reports"],
    )  # fmt: skip
    probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    results = evaluate_slide_embeddings(data, probes=probes, n_bootstrap=args.bootstrap, seed=args.seed, k=args.k,
                                        **kwargs)  # fmt: skip
    return results, format_slide_results(results)


@EVALUATORS.register("features")
def evaluate_features(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from reportkd.vlm.slide.evaluation import load_labelled_slides, mean_pool

    loaded = load_labelled_slides(args.features, args.labels, seed=args.seed)
    patches = [s.features for s in loaded["slides"]]
    return _slide_probes(args, mean_pool(loaded["slides"]), patches, loaded)


@EVALUATORS.register("slide")
def evaluate_slide_encoder(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from reportkd.vlm.slide.alignment import load_slide_model
    from reportkd.vlm.slide.evaluation import DEFAULT_TEMPLATES, encode_slides, load_labelled_slides

    loaded = load_labelled_slides(args.features, args.labels, seed=args.seed)
    model = load_slide_model(args.model, trust_remote_code=args.trust_remote_code)
    tokens = args.abmil_input == "tokens" and "abmil" in args.probes
    enc = encode_slides(model, loaded["slides"], device=args.device, return_patches=tokens)
    model.to("cpu")
    patches = enc["patches"] if tokens else [s.features for s in loaded["slides"]]
    extra = {}
    if enc["slide_features"] is not None:
        extra = {"aligned_model": model, "slide_features": enc["slide_features"],
                 "templates": args.templates or DEFAULT_TEMPLATES}  # fmt: skip
    return _slide_probes(args, enc["slide_embeds"], patches, loaded, **extra)


def run(args: argparse.Namespace) -> int:
    from ._classifier import check_outputs

    # inputs that are not paths (an open_clip name, synthetic:n=600) never match a file
    inputs = {f"--{k}": getattr(args, k, None) for k in ("model", "data", "predictions", "features", "labels")}
    check_outputs({"--out": args.out}, inputs, overwrite=args.overwrite)
    results, table = EVALUATORS.get(args.kind)(args)
    print(table)
    if args.out:
        from reportkd.utils import write_json

        write_json(args.out, results)
        print(f"\nMetrics → {args.out}")
    return 0
