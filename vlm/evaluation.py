"""Evaluation of image-text models: retrieval, zero-shot classification with prompt ensembling, linear probe.

The metric helpers work on plain tensors so any model family can reuse them:

- :func:`retrieval_recall_at_k` / :func:`retrieval_metrics`: image→text and text→image recall@k from a
  similarity matrix, with optional groups of equivalent captions;
- :func:`build_zero_shot_classifier`: class embeddings averaged over prompt templates and class synonyms
  (each prompt L2-normalised, the mean renormalised, as CLIP / TITAN / CONCH do);
- :func:`zero_shot_accuracy`, :func:`linear_probe` (multinomial logistic regression with L-BFGS, no sklearn;
  :func:`fit_logistic_regression` is the reusable fit, e.g. for slide-embedding probes with C chosen on validation).

Balanced accuracy comes from :mod:`reportkd.evaluation`, the one metric module of every model family.

:func:`evaluate_clip` runs all of them for an open_clip model (or a saved directory / model name).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from reportkd.evaluation import balanced_accuracy

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "an H&E image of {}.",
    "a histopathology image of {}.",
    "{}.",
    "an image of {} tissue.",
)


# ---------------------------------------------------------------------------------------------------------------
# Metrics on tensors
# ---------------------------------------------------------------------------------------------------------------
def retrieval_recall_at_k(similarity: torch.Tensor, k: int, positives: torch.Tensor | None = None) -> float:
    """Share of queries with a positive among their ``k`` most similar gallery items.

    Args:
        similarity: ``(Q, G)`` query-gallery similarities.
        k: Cut-off (>= 1).
        positives: ``(Q, G)`` boolean matrix of correct matches, or ``(Q,)`` gallery indices; default: the
            diagonal (query ``i`` matches gallery item ``i``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    q, g = similarity.shape
    if positives is None:
        if q != g:
            raise ValueError(f"A {q}x{g} similarity matrix needs explicit positives (the diagonal needs Q == G).")
        positives = torch.eye(q, dtype=torch.bool, device=similarity.device)
    elif positives.dim() == 1:
        positives = F.one_hot(positives.long(), g).bool()
    if positives.shape != similarity.shape:
        raise ValueError(f"positives {tuple(positives.shape)} must match similarity {tuple(similarity.shape)}.")
    top = similarity.topk(min(k, g), dim=1).indices
    hits = positives.to(similarity.device).gather(1, top).any(dim=1)
    return hits.float().mean().item()


def group_positives(groups: Sequence[Any] | None, n: int) -> torch.Tensor:
    """``(n, n)`` boolean matrix: items ``i`` and ``j`` match when they share a group (or ``i == j``)."""
    eye = torch.eye(n, dtype=torch.bool)
    if groups is None or all(g is None for g in groups):
        return eye
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    codes = torch.tensor([ids[g] for g in groups])
    return (codes[:, None] == codes[None, :]) | eye


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    groups: Sequence[Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image→text and text→image recall@k of paired embeddings (row ``i`` of each is pair ``i``).

    Args:
        image_features: ``(N, D)`` image embeddings (normalised inside).
        text_features: ``(N, D)`` text embeddings.
        groups: Optional group per pair; captions in one group describe the same content and all count as
            matches (as for COCO's several captions per image).
        ks: Cut-offs.
    """
    sim = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    positives = group_positives(groups, sim.shape[0])
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = retrieval_recall_at_k(sim, k, positives)
        out[f"t2i_R@{k}"] = retrieval_recall_at_k(sim.T, k, positives.T)
    out["mean_R@1"] = (out.get("i2t_R@1", 0.0) + out.get("t2i_R@1", 0.0)) / 2 if 1 in ks else float("nan")
    return out


@torch.no_grad()
def build_zero_shot_classifier(
    model: nn.Module,
    tokenizer: Callable,
    classnames: Sequence[Sequence[str] | str] | Mapping[str, Sequence[str]],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``(C, D)`` zero-shot weights: per class, the normalised mean of the normalised embeddings of every
    ``template.format(synonym)``.

    Args:
        model: An open_clip model (``encode_text``).
        tokenizer: Its tokenizer.
        classnames: Per class a name or a list of synonyms (a mapping's values, in order).
        templates: Prompt templates with one ``{}``.
        device: Device (default: the model's).
        batch_size: Prompts per forward pass.
    """
    if isinstance(classnames, Mapping):
        classnames = list(classnames.values())
    device = device or next(model.parameters()).device
    weights = []
    for names in classnames:
        names = [names] if isinstance(names, str) else list(names)
        prompts = [t.format(n) for n in names for t in templates]
        emb = torch.cat([model.encode_text(tokenizer(prompts[i : i + batch_size]).to(device), normalize=True)
                         for i in range(0, len(prompts), batch_size)])  # fmt: skip
        weights.append(F.normalize(F.normalize(emb.float(), dim=-1).mean(0), dim=-1))
    return torch.stack(weights)


def _balanced_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return balanced_accuracy(labels.cpu().numpy(), pred.cpu().numpy(), 0)


def zero_shot_accuracy(
    image_features: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """Top-1 and balanced accuracy of ``argmax(image @ classifier.T)``; labels of -100 are skipped.

    Args:
        image_features: ``(N, D)`` image embeddings.
        classifier: ``(C, D)`` class embeddings (see :func:`build_zero_shot_classifier`).
        labels: ``(N,)`` class indices.
    """
    keep = labels != -100
    logits = F.normalize(image_features[keep].float(), dim=-1) @ classifier.float().T
    pred, y = logits.argmax(-1), labels[keep]
    return {"zero_shot_acc": (pred == y).float().mean().item(), "zero_shot_balanced_acc": _balanced_accuracy(pred, y)}


@dataclass
class LogisticRegression:
    """A fitted multinomial logistic regression on standardised features (see :func:`fit_logistic_regression`).

    Args:
        mean: ``(D,)`` feature means of the training set.
        std: ``(D,)`` feature standard deviations (clamped away from 0).
        weight: ``(C, D)`` weights.
        bias: ``(C,)`` biases.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` logits."""
        return ((features.float() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` class probabilities."""
        return self.logits(features).softmax(-1)


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-3,
    max_iter: int = 300,
) -> LogisticRegression:
    """Multinomial logistic regression on standardised features, fitted with L-BFGS (no sklearn).

    Minimises ``mean cross-entropy + weight_decay * ||W||^2``; scikit-learn's ``C`` corresponds to
    ``weight_decay = 1 / (2 * C * N)``.

    Args:
        features: ``(N, D)`` training features.
        labels: ``(N,)`` class ids (-100 skipped).
        num_classes: Number of classes (default: ``max(label) + 1``).
        weight_decay: L2 penalty on the weights.
        max_iter: L-BFGS iterations.
    """
    keep = labels != -100
    x, y = features[keep].float(), labels[keep].long()
    if x.shape[0] == 0:
        raise ValueError("Logistic regression needs labelled training items (all labels are -100).")
    mean, std = x.mean(0), x.std(0).nan_to_num(1.0).clamp_min(1e-6)
    x = (x - mean) / std
    layer = nn.Linear(x.shape[1], num_classes or int(y.max()) + 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(layer(x), y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticRegression(mean, std, layer.weight.detach().clone(), layer.bias.detach().clone())


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 300,
) -> dict[str, float]:
    """Accuracy and balanced accuracy of :func:`fit_logistic_regression` on frozen features.

    Args:
        train_features: ``(N, D)`` training features.
        train_labels: ``(N,)`` training labels (-100 skipped).
        test_features: ``(M, D)`` test features.
        test_labels: ``(M,)`` test labels (-100 skipped).
        weight_decay: L2 penalty on the weights.
        max_iter: L-BFGS iterations.
    """
    tr, te = train_labels != -100, test_labels != -100
    if not tr.any() or not te.any():
        raise ValueError("The linear probe needs labelled training and test items.")
    yt = test_labels[te]
    num_classes = int(max(train_labels[tr].max(), yt.max())) + 1
    model = fit_logistic_regression(train_features[tr], train_labels[tr], num_classes=num_classes,
                                    weight_decay=weight_decay, max_iter=max_iter)  # fmt: skip
    with torch.no_grad():
        pred = model.logits(test_features[te]).argmax(-1)
    return {"linear_probe_acc": (pred == yt).float().mean().item(),
            "linear_probe_balanced_acc": _balanced_accuracy(pred, yt)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# open_clip models
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_image_text(
    model: nn.Module,
    dataset: Any,
    preprocess: Callable,
    tokenizer: Callable,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    desc: str = "encoding",
) -> dict[str, Any]:
    """Normalised image and text embeddings, labels and groups of an image-caption data set.

    Args:
        model: An open_clip model.
        dataset: Items ``{"image", "caption", "label"?, "group"?}``.
        preprocess: Image transform.
        tokenizer: Tokenizer.
        batch_size: Pairs per forward pass.
        device: Device (default: the model's).
        desc: Progress-bar label.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    images, texts, labels, groups = [], [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        pixels = torch.stack([preprocess(it["image"]) for it in items]).to(device)
        ids = tokenizer([it["caption"] for it in items]).to(device)
        images.append(model.encode_image(pixels, normalize=True).float().cpu())
        texts.append(model.encode_text(ids, normalize=True).float().cpu())
        labels += [int(it.get("label", -100)) for it in items]
        groups += [it.get("group") for it in items]
    model.train(was_training)
    return {"image": torch.cat(images), "text": torch.cat(texts), "labels": torch.tensor(labels), "groups": groups}


def _class_prompts(dataset: Any, classnames: Any) -> list[list[str]] | None:
    if classnames is not None:
        return [[c] if isinstance(c, str) else list(c) for c in (
            classnames.values() if isinstance(classnames, Mapping) else classnames)]  # fmt: skip
    synonyms = getattr(dataset, "class_synonyms", None)
    classes = getattr(dataset, "classes", None)
    if classes is None:
        return None
    return [list(synonyms[c]) if synonyms and c in synonyms else [c] for c in classes]


def evaluate_clip(
    model_dir_or_model: str | nn.Module | Any,
    dataset: Any = "synthetic:n=600,size=64,seed=1000",
    *,
    preprocess: Callable | None = None,
    tokenizer: Callable | None = None,
    classnames: Sequence[Sequence[str] | str] | Mapping[str, Sequence[str]] | None = None,
    templates: Sequence[str] | None = None,
    probe_dataset: Any | None = None,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Retrieval R@k, zero-shot accuracy (template + synonym ensembling) and a linear probe for one model.

    Args:
        model_dir_or_model: A directory written by ``save_open_clip``, any name ``load_open_clip`` accepts, an
            ``OpenCLIPBundle``, or an open_clip module (then pass ``preprocess`` / ``tokenizer`` or get open_clip's
            defaults for its config).
        dataset: Image-caption items, or a source for ``load_image_text_dataset`` (default: a synthetic split
            disjoint from the default training seed).
        preprocess: Image transform override.
        tokenizer: Tokenizer override.
        classnames: Class names / synonym lists for zero-shot; default: the data set's ``classes`` (and
            ``class_synonyms``). Zero-shot and the probe are skipped without labels or class names.
        templates: Prompt templates (default: the data set's ``templates`` or :data:`DEFAULT_TEMPLATES`).
        probe_dataset: Training items for the linear probe; default: a seeded random half of ``dataset``
            (the probe is then tested on the other half).
        ks: Retrieval cut-offs.
        batch_size: Pairs per forward pass.
        device: Device.
    """
    from .clip.data import load_image_text_dataset
    from .clip.models import OpenCLIPBundle, load_open_clip

    if isinstance(model_dir_or_model, (str, bytes)) or hasattr(model_dir_or_model, "__fspath__"):
        model_dir_or_model = load_open_clip(str(model_dir_or_model), device=device)
    if isinstance(model_dir_or_model, OpenCLIPBundle):
        preprocess = preprocess or model_dir_or_model.preprocess_val
        tokenizer = tokenizer or model_dir_or_model.tokenizer
        model = model_dir_or_model.model
    else:
        model = model_dir_or_model
    model = model.to(device)
    if preprocess is None or tokenizer is None:
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from .clip.models import context_length_of, model_preprocess_cfg

        cfg = {k: v for k, v in model_preprocess_cfg(model).items() if k in PreprocessCfg.__dataclass_fields__}
        preprocess = preprocess or image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        tokenizer = tokenizer or open_clip.SimpleTokenizer(context_length=context_length_of(model))
    if isinstance(dataset, str):
        dataset = load_image_text_dataset(dataset)
    enc = encode_image_text(model, dataset, preprocess, tokenizer, batch_size=batch_size, device=device)
    metrics: dict[str, float] = {"num_pairs": len(dataset)}
    metrics.update(retrieval_metrics(enc["image"], enc["text"], groups=enc["groups"], ks=ks))
    prompts = _class_prompts(dataset, classnames)
    labelled = (enc["labels"] != -100).any().item()
    if prompts is not None and labelled:
        templates = templates or getattr(dataset, "templates", None) or DEFAULT_TEMPLATES
        classifier = build_zero_shot_classifier(model, tokenizer, prompts, templates, device=device).cpu()
        metrics.update(zero_shot_accuracy(enc["image"], classifier, enc["labels"]))
    if labelled:
        if probe_dataset is not None:
            train = encode_image_text(model, probe_dataset, preprocess, tokenizer, batch_size=batch_size,
                                      device=device, desc="probe set")  # fmt: skip
            metrics.update(linear_probe(train["image"], train["labels"], enc["image"], enc["labels"]))
        else:
            order = torch.randperm(len(enc["labels"]), generator=torch.Generator().manual_seed(0))
            half = math.ceil(len(order) / 2)
            a, b = order[:half], order[half:]
            metrics.update(linear_probe(enc["image"][a], enc["labels"][a], enc["image"][b], enc["labels"][b]))
    return metrics
