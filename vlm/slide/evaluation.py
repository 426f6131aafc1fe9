"""Evaluation of slide representations: linear probe, kNN, ABMIL, retrieval, zero-shot.

The same code scores mean-pooled patch features (``reportkd evaluate features``) and slide-encoder embeddings
(``reportkd evaluate slide``); classification metrics (balanced accuracy, AUROC, macro-F1 with bootstrap confidence
intervals) all come from :func:`reportkd.evaluation.classification_metrics`.

- ``linear``: L2-regularised logistic regression (L-BFGS, :func:`reportkd.vlm.evaluation.fit_logistic_regression`),
  ``C`` chosen on the validation split by balanced accuracy, then fitted on train and scored on test;
- ``knn``: cosine k-nearest neighbours among the training slides, majority or similarity-weighted vote;
- ``abmil``: gated attention MIL (Ilse et al. 2018) trained on each slide's patch features, early stopping on the
  validation balanced accuracy;
- ``retrieval``: test slides query the train + val slides; a hit is a slide with the same label. ``acc@K``: a hit
  among the top K; ``mv_acc@K``: the majority label of the top K is right; ``map@K``: mean over queries of
  ``sum_{k<=K} precision@k * hit_k / min(K, hits in the gallery)``;
- ``zero_shot`` (aligned models): class prompts from templates, ``softmax(logit_scale * cos)``; and
  slide↔report retrieval R@K when the labels file has reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reportkd.evaluation import balanced_accuracy, classification_metrics, format_metrics_table
from reportkd.registry import Registry

from ..evaluation import build_zero_shot_classifier, fit_logistic_regression, retrieval_metrics
from ..wsi.features import SlideFeatures
from .abmil import abmil_predict_proba, train_abmil
from .data import pad_slides

DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a whole-slide image of {}.",
    "histopathology slide showing {}.",
    "diagnosis: {}.",
    "{}.",
)
PROBES: Registry[Any] = Registry("slide probe")


@dataclass
class SlideEmbeddings:
    """What the probes see: one embedding per slide, labels, splits and (for ABMIL) patch features per slide.

    Args:
        slide_ids: Slide names.
        embeddings: ``(N, D)`` slide embeddings.
        labels: ``(N,)`` class ids (-100: unlabelled).
        splits: ``"train"`` / ``"val"`` / ``"test"`` per slide.
        classes: Class names in label order.
        patches: Per slide ``(N_i, D_p)`` patch features or tokens (ABMIL), or None.
        reports: Per slide report text (or None), for slide↔report retrieval.
    """

    slide_ids: list[str]
    embeddings: torch.Tensor
    labels: torch.Tensor
    splits: list[str]
    classes: list[str]
    patches: list[torch.Tensor] | None = None
    reports: list[str | None] | None = None

    def split_index(self, name: str) -> torch.Tensor:
        return torch.tensor(
            [i for i, s in enumerate(self.splits) if s == name and self.labels[i] != -100], dtype=torch.long
        )


def make_splits(labels: Sequence[int], *, val: float = 0.2, test: float = 0.2, seed: int = 0) -> list[str]:
    """Stratified random train / val / test assignment with a fixed seed (per class: test first, then val).

    Args:
        labels: Class id per slide.
        val: Validation share.
        test: Test share.
        seed: Shuffling seed.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    splits = np.array(["train"] * len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test * len(idx)))
        n_val = int(round(val * len(idx)))
        splits[idx[:n_test]] = "test"
        splits[idx[n_test : n_test + n_val]] = "val"
    return splits.tolist()


def _probs_metrics(probs: torch.Tensor, labels: torch.Tensor, n_bootstrap: int, seed: int) -> dict[str, Any]:
    return classification_metrics(probs.double().numpy(), labels.numpy(), n_bootstrap=n_bootstrap, seed=seed)


def _bacc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return balanced_accuracy(labels.numpy(), probs.argmax(-1).numpy(), probs.shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# Probes on slide embeddings
# ---------------------------------------------------------------------------------------------------------------
def select_logistic_regression(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    num_classes: int,
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 300,
) -> tuple[Any, float]:
    """Fits one logistic regression per ``C`` on train, keeps the best on val (balanced accuracy, then lower val
    cross-entropy). Returns the fitted model and its ``C``."""
    best, best_key = None, None
    for c in cs:
        model = fit_logistic_regression(
            train_x, train_y, num_classes=num_classes, weight_decay=1.0 / (2 * c * len(train_y)), max_iter=max_iter
        )
        probs = model.predict_proba(val_x)
        key = (_bacc(probs, val_y), -F.nll_loss(probs.clamp_min(1e-12).log(), val_y).item())
        if best_key is None or key > best_key:
            best, best_key = (model, float(c)), key
    return best


def knn_predict_proba(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    weighting: str = "similarity",
    temperature: float = 0.07,
) -> torch.Tensor:
    """``(M, C)`` vote shares of the ``k`` most cosine-similar training items.

    Args:
        train_x: ``(N, D)`` training embeddings.
        train_y: ``(N,)`` their labels.
        test_x: ``(M, D)`` query embeddings.
        num_classes: Number of classes.
        k: Neighbours (capped at N).
        weighting: ``"majority"`` (one vote each) or ``"similarity"`` (``exp(cos / temperature)``, DINO's kNN).
        temperature: Temperature of similarity weighting.
    """
    if weighting not in ("majority", "similarity"):
        raise ValueError(f"weighting must be 'majority' or 'similarity', got {weighting!r}.")
    sims = F.normalize(test_x.float(), dim=-1) @ F.normalize(train_x.float(), dim=-1).T
    top, idx = sims.topk(min(k, train_x.shape[0]), dim=-1)
    weights = torch.ones_like(top) if weighting == "majority" else (top / temperature).exp()
    votes = torch.zeros(test_x.shape[0], num_classes).scatter_add_(1, train_y[idx], weights)
    return votes / votes.sum(-1, keepdim=True)


def label_retrieval_metrics(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Slide→slide retrieval by label: ``acc@K``, ``mv_acc@K`` and ``map@K`` (see the module docstring)."""
    sims = F.normalize(query.float(), dim=-1) @ F.normalize(gallery.float(), dim=-1).T
    order = sims.argsort(dim=-1, descending=True)
    hits = (gallery_labels[order] == query_labels[:, None]).float()  # (Q, G)
    n_relevant = (gallery_labels[None, :] == query_labels[:, None]).sum(-1).float()
    out = {}
    for k in ks:
        kk = min(k, gallery.shape[0])
        h = hits[:, :kk]
        out[f"acc@{k}"] = h.any(-1).float().mean().item()
        votes = F.one_hot(gallery_labels[order[:, :kk]], int(max(gallery_labels.max(), query_labels.max())) + 1)
        out[f"mv_acc@{k}"] = (votes.sum(1).argmax(-1) == query_labels).float().mean().item()
        precision = h.cumsum(-1) / torch.arange(1, kk + 1)
        ap = (precision * h).sum(-1) / n_relevant.clamp(max=kk).clamp_min(1)
        out[f"map@{k}"] = ap.mean().item()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Probe registry and the evaluation driver
# ---------------------------------------------------------------------------------------------------------------
@PROBES.register("linear")
def _linear(data: SlideEmbeddings, tr, va, te, opts: Mapping[str, Any]) -> dict[str, Any]:
    x, y, c = data.embeddings, data.labels, len(data.classes)
    model, best_c = select_logistic_regression(
        x[tr], y[tr], x[va], y[va], num_classes=c, cs=opts.get("cs", DEFAULT_CS)
    )
    out = _probs_metrics(model.predict_proba(x[te]), y[te], opts["n_bootstrap"], opts["seed"])
    return {**out, "C": best_c}


@PROBES.register("knn")
def _knn(data: SlideEmbeddings, tr, va, te, opts: Mapping[str, Any]) -> dict[str, Any]:
    x, y, k = data.embeddings, data.labels, opts.get("k", 20)
    probs = knn_predict_proba(
        x[tr], y[tr], x[te], num_classes=len(data.classes), k=k, weighting=opts.get("knn_weighting", "similarity")
    )
    return {**_probs_metrics(probs, y[te], opts["n_bootstrap"], opts["seed"]), "k": k}


@PROBES.register("abmil")
def _abmil(data: SlideEmbeddings, tr, va, te, opts: Mapping[str, Any]) -> dict[str, Any]:
    if data.patches is None:
        raise ValueError("ABMIL needs patch features per slide: build SlideEmbeddings with patches=.")
    model, info = train_abmil(
        data.patches,
        data.labels,
        tr.tolist(),
        va.tolist(),
        num_classes=len(data.classes),
        seed=opts["seed"],
        **opts.get("abmil", {}),
    )
    probs = abmil_predict_proba(model, data.patches, te.tolist())
    return {**_probs_metrics(probs, data.labels[te], opts["n_bootstrap"], opts["seed"]), **info}


@PROBES.register("retrieval")
def _retrieval(data: SlideEmbeddings, tr, va, te, opts: Mapping[str, Any]) -> dict[str, Any]:
    gallery = torch.cat([tr, va])
    x, y = data.embeddings, data.labels
    return label_retrieval_metrics(x[te], y[te], x[gallery], y[gallery], ks=opts.get("ks", (1, 5, 10)))


def evaluate_slide_embeddings(
    data: SlideEmbeddings,
    *,
    probes: Sequence[str] = ("linear", "knn", "abmil", "retrieval"),
    aligned_model: Any = None,
    slide_features: torch.Tensor | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    n_bootstrap: int = 1000,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Runs the probes on the train / val / test splits of ``data``.

    When no slide is in ``val``, a stratified 20 % of ``train`` becomes validation (for C and early stopping).

    Args:
        data: Embeddings, labels, splits (and patches for ABMIL).
        probes: Registered probe names (see ``PROBES``).
        aligned_model: A ``SlideReportModel``: adds zero-shot classification and slide↔report retrieval.
        slide_features: ``(N, embed_dim)`` normalised shared-space slide embeddings of ``aligned_model``.
        templates: Zero-shot prompt templates (``{}`` = class name).
        n_bootstrap: Bootstrap resamples of the confidence intervals.
        seed: Seed of the validation carve-out, ABMIL and bootstrap.
        **options: Probe options: ``cs``, ``k``, ``knn_weighting``, ``ks``, ``abmil`` (dict of
            :func:`train_abmil` arguments).

    Returns:
        ``{probe: metrics, ..., "meta": {...}}``.
    """
    for name in probes:
        PROBES.get(name)  # unknown names fail before any work
    splits = list(data.splits)
    if not any(s == "val" for s in splits):
        train = [i for i, s in enumerate(splits) if s == "train" and data.labels[i] != -100]
        carve = make_splits(data.labels[train].tolist(), val=0.2, test=0.0, seed=seed)
        for i, s in zip(train, carve):
            splits[i] = s
    data = SlideEmbeddings(**{**data.__dict__, "splits": splits})
    tr, va, te = (data.split_index(s) for s in ("train", "val", "test"))
    if min(len(tr), len(va), len(te)) == 0:
        raise ValueError(
            f"Need labelled train, val and test slides; got {len(tr)}, {len(va)}, {len(te)}. Add a "
            "split column to the labels file or provide more labelled slides."
        )
    opts = {"n_bootstrap": n_bootstrap, "seed": seed, **options}
    results: dict[str, Any] = {name: PROBES.get(name)(data, tr, va, te, opts) for name in probes}
    if aligned_model is not None and slide_features is not None:
        classifier = build_zero_shot_classifier(
            aligned_model, aligned_model.tokenize, data.classes, templates, device="cpu"
        )
        scale = aligned_model.logit_scale.exp().clamp(max=100).item()
        probs = (scale * slide_features[te].float() @ classifier.float().T).softmax(-1)
        results["zero_shot"] = _probs_metrics(probs, data.labels[te], n_bootstrap, seed)
        reports = [data.reports[i] for i in te] if data.reports is not None else []
        if reports and all(r for r in reports):
            with torch.no_grad():
                text = aligned_model.encode_text(aligned_model.tokenize(reports)).float()
            r = retrieval_metrics(slide_features[te], text)
            results["slide_report_retrieval"] = {
                k.replace("i2t", "slide2report").replace("t2i", "report2slide"): v for k, v in r.items()
            }
    results["meta"] = {
        "n_slides": len(data.slide_ids),
        "classes": data.classes,
        "splits": {s: len(i) for s, i in zip(("train", "val", "test"), (tr, va, te))},
        "embedding_dim": int(data.embeddings.shape[1]),
    }
    return results


def format_slide_results(results: Mapping[str, Any]) -> str:
    """Markdown: one classification table (probes as rows) and one table of retrieval metrics."""
    classification = {k: v for k, v in results.items() if isinstance(v, Mapping) and "balanced_accuracy" in v}
    parts = []
    if classification:
        parts.append(
            format_metrics_table(classification, ("balanced_accuracy", "macro_auroc", "macro_f1", "accuracy"))
        )
    rows = [
        (f"{name} {k}", v)
        for name in ("retrieval", "slide_report_retrieval")
        if name in results
        for k, v in results[name].items()
    ]
    if rows:
        parts.append("| retrieval | value |\n|---|---|\n" + "\n".join(f"| {k} | {v:.3f} |" for k, v in rows))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Embedding slides
# ---------------------------------------------------------------------------------------------------------------
def mean_pool(slides: Sequence[SlideFeatures]) -> torch.Tensor:
    """``(N, D)`` mean patch feature of each slide."""
    return torch.stack([s.features.float().mean(0) for s in slides])


@torch.no_grad()
def encode_slides(
    model: nn.Module,
    slides: Sequence[SlideFeatures],
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    return_patches: bool = False,
) -> dict[str, Any]:
    """Slide embeddings of a saved / trained slide encoder (or slide-report model) on whole slides.

    Args:
        model: ``SlideEncoderModel`` or ``SlideReportModel``.
        slides: The slides (whole grids; no cropping).
        batch_size: Slides per forward pass (padded).
        device: Device.
        return_patches: Also return each slide's patch tokens (float16, for ABMIL).

    Returns:
        ``{"slide_embeds": (N, H), "slide_features": (N, E) or None, "patches": list or None}``.
    """
    from .alignment import SlideReportModel

    aligned = isinstance(model, SlideReportModel)
    encoder = model.slide_encoder if aligned else model
    model.to(device).eval()
    embeds, feats, patches = [], [], []
    for start in range(0, len(slides), batch_size):
        chunk = slides[start : start + batch_size]
        batch = pad_slides([s.features for s in chunk], [s.grid for s in chunk])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = encoder(batch["features"], batch["grid"], batch["patch_mask"])
        embeds.append(out.slide_embeds.float().cpu())
        if aligned:
            feats.append(F.normalize(model.slide_projection(out.slide_embeds), dim=-1).float().cpu())
        if return_patches:
            for i, s in enumerate(chunk):
                patches.append(out.patch_embeds[i, : s.features.shape[0]].half().cpu())
    return {
        "slide_embeds": torch.cat(embeds),
        "slide_features": torch.cat(feats) if aligned else None,
        "patches": patches if return_patches else None,
    }


def load_labelled_slides(features_dir: str, labels_file: str, *, seed: int = 0) -> dict[str, Any]:
    """Features files of the slides listed in a labels file, with label ids, splits and reports.

    Splits come from the file's ``split`` column (all rows or none) or from :func:`make_splits` with ``seed``.

    Args:
        features_dir: Folder of ``<slide_id>.safetensors`` features files.
        labels_file: CSV / TSV / JSONL with ``slide_id,label[,split][,report]``.
        seed: Seed of generated splits.

    Returns:
        ``{"slides", "labels", "splits", "classes", "reports"}`` (labelled slides only).
    """
    from .data import SlideDataset, read_slide_labels

    rows = [r for r in read_slide_labels(labels_file) if r["label"] is not None]
    with_split = [r["split"] is not None for r in rows]
    if any(with_split) and not all(with_split):
        raise ValueError(
            f"{labels_file}: {with_split.count(False)} labelled row(s) have no split; give every row a "
            "split (train / val / test) or none (splits are then drawn with --seed)."
        )
    ds = SlideDataset.from_folder(features_dir, labels=rows)
    slides = [ds.slide_features(i) for i in range(len(ds))]
    table = {r["slide_id"]: r for r in rows}
    labels = torch.tensor([ds.classes.index(table[s.slide_id]["label"]) for s in slides])
    if all(with_split):
        splits = [table[s.slide_id]["split"] for s in slides]
    else:
        splits = make_splits(labels.tolist(), seed=seed)
    if len(slides) < len(rows):
        import logging

        logging.getLogger(__name__).warning(
            "%d labelled slide(s) have no features file in %s and are skipped.", len(rows) - len(slides), features_dir
        )
    return {
        "slides": slides,
        "labels": labels,
        "splits": splits,
        "classes": ds.classes,
        "reports": [table[s.slide_id]["report"] for s in slides],
    }


def evaluate_slide_model(
    model: nn.Module | None,
    source: str,
    *,
    labels: str | None = None,
    grid: str = "fine",
    probes: Sequence[str] = ("linear", "knn", "retrieval"),
    n_bootstrap: int = 200,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **options: Any,
) -> dict[str, Any]:
    """Probes a slide encoder (or, with ``model=None``, mean-pooled features) on a synthetic spec or a folder.

    Args:
        model: ``SlideEncoderModel``, ``SlideReportModel`` or None (mean-pooled patch features).
        source: ``"synthetic[:opts]"`` (splits drawn with ``seed``) or a features folder (then ``labels``).
        labels: Labels file of a folder source.
        grid: Synthetic only: ``"fine"`` or ``"coarse"`` patch grid.
        probes: Probe names.
        n_bootstrap: Bootstrap resamples.
        seed: Seed of splits, ABMIL, bootstrap.
        device: Device of the encoder.
        **options: Further :func:`evaluate_slide_embeddings` options.
    """
    from .data import synthetic_dataset

    if source == "synthetic" or source.startswith("synthetic:"):
        ds = synthetic_dataset(source.partition(":")[2], grid=grid)
        slides = [ds.slide_features(i) for i in range(len(ds))]
        items = [ds[i] for i in range(len(ds))]
        y = torch.tensor([it["label"] for it in items])
        loaded = {
            "slides": slides,
            "labels": y,
            "splits": make_splits(y.tolist(), seed=seed),
            "classes": ds.classes,
            "reports": [it["report"] for it in items],
        }
    else:
        if labels is None:
            raise ValueError(f"Evaluating on the folder {source} needs a labels file (slide_id,label[,split]).")
        loaded = load_labelled_slides(source, labels, seed=seed)
    extra: dict[str, Any] = {}
    if model is None:
        embeds, patches = mean_pool(loaded["slides"]), [s.features for s in loaded["slides"]]
    else:
        enc = encode_slides(model, loaded["slides"], device=device, return_patches="abmil" in probes)
        embeds, patches = enc["slide_embeds"], enc["patches"]
        if enc["slide_features"] is not None:
            extra = {"aligned_model": model.to("cpu"), "slide_features": enc["slide_features"]}
    data = SlideEmbeddings(
        [s.slide_id for s in loaded["slides"]],
        embeds,
        loaded["labels"],
        loaded["splits"],
        loaded["classes"],
        patches=patches,
        reports=loaded["reports"],
    )
    return evaluate_slide_embeddings(data, probes=probes, n_bootstrap=n_bootstrap, seed=seed, **extra, **options)
