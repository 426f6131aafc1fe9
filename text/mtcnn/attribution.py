"""Which n-grams drove an MtCNN's prediction: the windows that won each filter's max-pool, weighted by the class head.

An MtCNN scores class ``c`` of a task as ``z_c = b_c + Σ_j W_cj h_j`` with ``h_j = relu(max_p conv_j(x)_p + β_j)``:
every filter ``j`` (of kernel size ``k_j``) reads exactly one window of ``k_j`` tokens, the one that won its global
max-pool (position ``p_j``). The attribution rule follows the model exactly:

1. **Filter contribution** to class ``c``: ``s_j = (W_cj − mean_c' W_c'j) · h_j``, the filter's share of the class
   logit *relative to the task's other classes* (softmax ignores what adds to every class alike; a filter that raises
   all classes equally explains nothing). Filters with ``h_j = 0`` (ReLU off) contribute nothing.
2. **Decisive filters**: the ``top_filters`` largest positive ``s_j``.
3. **N-grams**: each decisive filter's winning window, tokens ``[p_j, p_j + k_j)`` clipped to the document (a
   document shorter than ``k_j`` has one window, its whole text); filters that won the same window add up. N-grams
   are ranked by summed contribution, in logit units.

Exact for the model (no gradients, no sampling): the contributions of all filters plus the centred bias equal the
centred logit. Functions here are pure (tensors in, tensors or lists out) and run in evaluation mode without
gradients; :func:`attribute_reports` chains them for a batch.

A HiSAN (``reportkd.text.hisan``) has no per-class windows; :func:`hisan_token_attention` gives its attention instead:
each token's word-level target attention within its line times its line's line-level target attention (each
averaged over heads), a distribution over the document's tokens shared by every task and class. It shows what the
model read, not why it chose a class. :func:`top_token_spans` turns it into highlighted spans.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .modeling_mtcnn import MtCNNForReportClassification, prepare_windows


@dataclass(frozen=True)
class PooledWindows:
    """The max-pooled windows of a batch of documents.

    Args:
        features: ``(B, H)`` pooled features ``h`` (the model's ``doc_embeddings``), filters of all kernel sizes
            concatenated in the model's order.
        starts: ``(B, H)`` token position of the window that won each filter's max-pool.
        ends: ``(B, H)`` end (exclusive) of that window, clipped to the document's tokens.
    """

    features: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor


@dataclass(frozen=True)
class Ngram:
    """A decisive n-gram.

    Args:
        start: First token position.
        end: Token position after the last one.
        score: Summed contribution of the filters whose max-pool it won (logit units, relative to the task's mean).
        filters: How many of the decisive filters won this window (:func:`top_token_spans`: tokens in the span).
    """

    start: int
    end: int
    score: float
    filters: int


@torch.no_grad()
def max_pool_windows(
    model: MtCNNForReportClassification, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
) -> PooledWindows:
    """Pooled features of an MtCNN and, per filter, the window that won its max-pool.

    Uses ``F.conv1d`` with the model's own window masks (:func:`~reportkd.text.mtcnn.modeling_mtcnn.prepare_windows`),
    so the features equal the model's ``doc_embeddings``.

    Args:
        model: A single MtCNN (not an ensemble).
        input_ids: ``(B, L)`` right-padded token ids.
        attention_mask: Optional ``(B, L)`` mask.
    """
    if not isinstance(model, MtCNNForReportClassification):
        raise TypeError(f"max_pool_windows needs an MtCNNForReportClassification, got {type(model).__name__}.")
    config = model.config
    table = model.embeddings.weight
    ids, valid, masks = prepare_windows(
        input_ids, attention_mask, config.pad_token_id, config.kernel_sizes, table.dtype
    )
    x = (F.embedding(ids, table) * valid.unsqueeze(-1).to(table.dtype)).transpose(1, 2)
    n_tokens = valid.sum(1, keepdim=True)
    features, starts, ends = [], [], []
    for conv, mask, k in zip(model.convs, masks, config.kernel_sizes):
        scores = F.conv1d(x, conv.weight)[..., : mask.shape[1]] + mask.unsqueeze(1)  # (B, F, Lw)
        value, start = scores.max(-1)
        features.append(F.relu(value + conv.bias))
        starts.append(start)
        ends.append(torch.minimum(start + k, n_tokens))
    return PooledWindows(torch.cat(features, -1), torch.cat(starts, -1), torch.cat(ends, -1))


def filter_contributions(weight: torch.Tensor, features: torch.Tensor, classes: torch.LongTensor) -> torch.Tensor:
    """``(B, H)`` contribution of every filter to each row's class logit, relative to the mean over classes.

    Args:
        weight: ``(C, H)`` weight of the task's linear head.
        features: ``(B, H)`` pooled features.
        classes: ``(B,)`` class of each row to explain.
    """
    centred = weight - weight.mean(0, keepdim=True)
    return centred[classes] * features


def decisive_ngrams(
    contributions: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    *,
    top_filters: int = 10,
    max_ngrams: int | None = None,
) -> list[Ngram]:
    """The n-grams of one document: windows of its ``top_filters`` most positive filters, merged, best first.

    Args:
        contributions: ``(H,)`` filter contributions (:func:`filter_contributions` of one row).
        starts: ``(H,)`` winning window starts.
        ends: ``(H,)`` winning window ends.
        top_filters: Number of filters kept (only positive contributions count).
        max_ngrams: Keep at most this many n-grams (None: all).
    """
    if top_filters < 1:
        raise ValueError(f"top_filters must be >= 1, got {top_filters}.")
    k = min(top_filters, contributions.numel())
    values, index = contributions.topk(k)
    merged: dict[tuple[int, int], list[float]] = {}
    for value, j in zip(values.tolist(), index.tolist()):
        if value <= 0:
            break
        span = (int(starts[j]), int(ends[j]))
        if span[1] <= span[0]:
            continue
        merged.setdefault(span, []).append(value)
    ngrams = [Ngram(s, e, float(sum(v)), len(v)) for (s, e), v in merged.items()]
    ngrams.sort(key=lambda g: (-g.score, g.start))
    return ngrams[:max_ngrams] if max_ngrams is not None else ngrams


@torch.no_grad()
def attribute_reports(
    model: MtCNNForReportClassification,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    classes: Mapping[str, Sequence[Sequence[int]]],
    *,
    top_filters: int = 10,
    max_ngrams: int | None = 5,
) -> list[dict[str, dict[int, list[Ngram]]]]:
    """Per document, task and class to explain, its decisive n-grams (token positions).

    Args:
        model: A single MtCNN.
        input_ids: ``(B, L)`` right-padded token ids.
        attention_mask: Optional ``(B, L)`` mask.
        classes: Task → per document the class ids to explain (e.g. the top-3 candidates).
        top_filters: Filters kept per (document, task, class).
        max_ngrams: N-grams kept per (document, task, class).

    Returns:
        One dict per document: task → class id → n-grams, best first.
    """
    was_training = model.training
    model.eval()
    try:
        pooled = max_pool_windows(model, input_ids, attention_mask)
    finally:
        model.train(was_training)
    out: list[dict[str, dict[int, list[Ngram]]]] = [{} for _ in range(input_ids.shape[0])]
    for task, per_doc in classes.items():
        if len(per_doc) != input_ids.shape[0]:
            raise ValueError(f"classes[{task!r}] has {len(per_doc)} rows for {input_ids.shape[0]} documents.")
        weight = model.classifiers[task].weight
        if model.config.abstain_class:  # DAC models: explain among the real classes only
            weight = weight[:-1]
        for b, wanted in enumerate(per_doc):
            cls = torch.as_tensor(list(wanted), dtype=torch.long, device=weight.device)
            contrib = filter_contributions(weight, pooled.features[b].expand(len(cls), -1), cls)
            out[b][task] = {
                int(c): decisive_ngrams(
                    contrib[i], pooled.starts[b], pooled.ends[b], top_filters=top_filters, max_ngrams=max_ngrams
                )
                for i, c in enumerate(cls.tolist())
            }
    return out


def _target_attention(
    level: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One HiSAN level in evaluation mode: its ``(N, S)`` target-attention weights (mean over heads) and the pooled
    ``(N, heads * d)`` vectors its ``forward`` returns."""
    q, k, v = level._heads(level.query(x)), level._heads(level.key(x)), level._heads(level.value(x))
    keep = mask[..., None, None, :]
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~keep, torch.finfo(x.dtype).min)
    attended = (torch.softmax(scores, -1) * keep.to(x.dtype)) @ v
    target = level.target.to(attended.dtype)
    scores = (target @ attended.transpose(-1, -2) / math.sqrt(target.shape[-1])).masked_fill(
        ~keep, torch.finfo(x.dtype).min
    )
    weights = torch.softmax(scores, -1) * keep.to(x.dtype)  # (N, heads, 1, S)
    pooled = (weights @ attended).squeeze(-2).flatten(-2)
    return weights.squeeze(-2).mean(-2), pooled


@torch.no_grad()
def hisan_token_attention(
    model: torch.nn.Module, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` attention of a HiSAN on each token (sums to 1 per document) and the ``(B, H)`` document embeddings.

    Lines are cut as the model cuts them (``words_per_line`` tokens); the embeddings equal the model's
    ``doc_embeddings`` (evaluation mode).

    Args:
        model: A ``HiSANForReportClassification``.
        input_ids: ``(B, L)`` right-padded token ids.
        attention_mask: Optional ``(B, L)`` mask.
    """
    config = model.config
    if getattr(config, "model_type", None) != "hisan":
        raise TypeError(f"hisan_token_attention needs a HiSAN, got {type(model).__name__}.")
    was_training = model.training
    model.eval()
    try:
        valid = input_ids != config.pad_token_id
        if attention_mask is not None:
            valid &= attention_mask.bool()
        batch, length = input_ids.shape
        width = config.words_per_line
        n_lines = max(1, math.ceil(length / width))
        extra = n_lines * width - length
        ids = F.pad(input_ids.masked_fill(~valid, config.pad_token_id), (0, extra), value=config.pad_token_id)
        valid = F.pad(valid, (0, extra), value=False)
        ids, valid = ids.view(batch, n_lines, width), valid.view(batch, n_lines, width)
        line_valid = valid.any(-1)
        word_weights, line_vectors = _target_attention(
            model.word_level, model.embeddings(ids[line_valid]), valid[line_valid]
        )
        lines = line_vectors.new_zeros(batch, n_lines, line_vectors.shape[-1])
        lines[line_valid] = line_vectors
        line_weights, documents = _target_attention(model.line_level, lines, line_valid)
        words = word_weights.new_zeros(batch, n_lines, width)
        words[line_valid] = word_weights
        return (words * line_weights.unsqueeze(-1)).view(batch, -1)[:, :length], documents
    finally:
        model.train(was_training)


def top_token_spans(weights: torch.Tensor, *, max_spans: int = 5, tokens_per_span: int = 3) -> list[Ngram]:
    """The most attended tokens of one document as spans: the ``max_spans * tokens_per_span`` heaviest tokens, adjacent
    ones merged, the ``max_spans`` heaviest spans (score = summed weight), best first.

    Args:
        weights: ``(L,)`` per-token weights (zero for padding).
        max_spans: Spans kept.
        tokens_per_span: Tokens considered per span kept.
    """
    k = min(max_spans * tokens_per_span, int((weights > 0).sum()))
    if k == 0 or max_spans < 1:
        return []
    values, index = weights.topk(k)
    chosen = dict(zip(index.tolist(), values.tolist()))
    runs: list[list[int]] = []
    for position in sorted(chosen):
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    spans = [Ngram(run[0], run[-1] + 1, float(sum(chosen[p] for p in run)), len(run)) for run in runs]
    spans.sort(key=lambda g: (-g.score, g.start))
    return spans[:max_spans]


__all__ = [
    "Ngram",
    "PooledWindows",
    "attribute_reports",
    "decisive_ngrams",
    "filter_contributions",
    "hisan_token_attention",
    "max_pool_windows",
    "top_token_spans",
]
