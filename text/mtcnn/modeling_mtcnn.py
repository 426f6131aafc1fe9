"""Multitask CNN (MtCNN) report classifier, as in ORNL's FrESCO and De Angeli et al. (JAMIA Open 2022).

Self-contained (torch, transformers and the config file next to it): ``save_pretrained`` copies this file and
``configuration_mtcnn.py`` into the folder with an ``auto_map``, so ``AutoModel.from_pretrained(folder,
trust_remote_code=True)`` works without reportkd installed. With reportkd installed the registered classes load it
and no folder code runs.

The convolution + masked max-pool runs through `conv_max_pool`, shared with the ensemble (`ensemble.py`). Its fused
implementation computes the forward pass as one GEMM per kernel size on an unfolded (im2col) copy of the embedded
document, and the backward pass only at each filter's argmax window: after a global max-pool, exactly one window per
(document, filter) receives gradient, so the backward costs ~B*F*k*E instead of the convolution's ~B*L*F*k*E.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mtcnn import MtCNNConfig

try:  # saved folders ship this file: with plain transformers (no reportkd) the loss falls back to the same formula
    from reportkd.losses import multitask_kd_loss
except ImportError:  # pragma: no cover - exercised in tests/test_remote_code.py's subprocess
    multitask_kd_loss = None

# Unfolded-input bytes per chunk of members on CPU: measured on 2 cores, one member at a time wins from ~0.6 MB
# per member up (GEMM-bound); tiny models batch several members to save per-op overhead.
CPU_CHUNK_BYTES = 2 * 2**20
# On GPUs all members at once, up to this much unfolded input (paper sizes: ~290 MB per member at batch 32).
ACCELERATOR_CHUNK_BYTES = 2**30


@dataclass
class MtCNNOutput(ModelOutput):
    """Output of `MtCNNForReportClassification`.

    Args:
        loss: Mean over tasks of each task's mean cross-entropy over its present labels (when labels are given).
        logits: Task -> logits (B, C_t).
        doc_embeddings: Pooled document embedding before dropout (B, num_filters * len(kernel_sizes)).
    """

    loss: torch.FloatTensor | None = None
    logits: dict[str, torch.FloatTensor] | None = None
    doc_embeddings: torch.FloatTensor | None = None


def is_tracing() -> bool:
    """True under ``torch.export`` / ``torch.compile`` / ONNX / TorchScript tracing (no data-dependent branches)."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def prepare_windows(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    pad_token_id: int,
    kernel_sizes: list[int],
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.LongTensor, torch.Tensor, list[torch.Tensor]]:
    """Pad/trim ids and build, for each kernel size, an additive 0/-inf mask over window start positions.

    A token is valid when it is not `pad_token_id` and its attention mask is 1; invalid tokens are replaced by the
    pad id. Columns after the last valid token of the batch are dropped. A window is valid when it holds
    `min(k, n)` valid tokens (n = valid tokens of the document), so documents shorter than `k` keep one window
    (zero-padded on the right) and a document gives the same pooled features alone or padded in a batch.

    Args:
        input_ids: (B, L) token ids.
        attention_mask: Optional (B, L) mask, 1 for real tokens.
        pad_token_id: Padding id.
        kernel_sizes: Convolution window sizes.
        dtype: dtype of the returned masks.

    Returns:
        ids (B, Lt) with Lt = max(L', kmax) + kmax - kmin, valid (B, Lt) bool, and per kernel a (B, Lw) mask with
        Lw = Lt - kmax + 1 window starts.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
    valid = input_ids != pad_token_id
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}."
            )
        valid &= attention_mask.bool()
    kmax, kmin = max(kernel_sizes), min(kernel_sizes)
    if is_tracing():  # torch.export / ONNX: no data-dependent length; the extra columns are masked windows
        length = input_ids.shape[1]
        total = length + kmax
    else:
        used = valid.any(0).nonzero()
        length = int(used.max()) + 1 if used.numel() else 0
        total = max(length, kmax) + kmax - kmin
    ids = input_ids[:, :length].masked_fill(~valid[:, :length], pad_token_id)
    ids = F.pad(ids, (0, total - length), value=pad_token_id)
    valid = F.pad(valid[:, :length], (0, total - length), value=False)
    num_windows = total - kmax + 1
    counts = F.pad(valid.cumsum(1), (1, 0))
    n_valid = counts[:, -1:]
    masks = []
    for k in kernel_sizes:
        in_window = counts[:, k : k + num_windows] - counts[:, :num_windows]
        bias = torch.zeros(in_window.shape, dtype=dtype, device=input_ids.device)
        masks.append(bias.masked_fill_(in_window != n_valid.clamp(max=k), float("-inf")))
    return ids, valid, masks


class _FusedConvMaxPool(torch.autograd.Function):
    """Per member and kernel size: max over windows of (conv(embed(ids)) + mask), and its argmax (bias/ReLU excluded).

    Inputs: ids/valid/masks from `prepare_windows`, table (N or 1, V, E), weights (N, F, E, k) per kernel size.
    Members are processed `chunk` at a time so the unfolded input (chunk, B * Lw, kmax * E) stays cache-sized.
    The forward GEMMs run in `gemm_dtype` (the autocast dtype under autocast); gradients are computed in the
    parameters' dtype.
    """

    @staticmethod
    def forward(ctx, ids, valid, masks, kernel_sizes, pad_token_id, chunk, gemm_dtype, table, *weights):
        n_members, n_tables = weights[0].shape[0], table.shape[0]
        vocab, dim = table.shape[1:]
        batch, total = ids.shape
        kmax = max(kernel_sizes)
        num_windows = total - kmax + 1
        rows = batch * num_windows
        flat = table.reshape(n_tables * vocab, dim).to(gemm_dtype)
        # A non-zero pad row (e.g. loaded weights) must not leak into the windows of short documents.
        zero_pad = not bool(table[:, pad_token_id].any())
        ids_unf = ids.unfold(1, kmax, 1)  # (B, Lw, kmax) view
        gemm_w = [
            w.permute(0, 3, 2, 1).reshape(n_members, k * dim, -1).to(gemm_dtype) for w, k in zip(weights, kernel_sizes)
        ]
        masks = [m.view(rows, 1).to(gemm_dtype) for m in masks]
        vals = [flat.new_empty(n_members, batch, w.shape[-1]) for w in gemm_w]
        idxs = [torch.empty(n_members, batch, w.shape[-1], dtype=torch.long, device=ids.device) for w in gemm_w]

        def unfolded(start: int, stop: int) -> torch.Tensor:
            offsets = torch.arange(start, stop, device=ids.device).view(-1, 1, 1, 1) * vocab
            xu = F.embedding(ids_unf + offsets, flat)  # (c, B, Lw, kmax, E): im2col by a single gather
            if not zero_pad:
                xu = xu * valid.unfold(1, kmax, 1).unsqueeze(-1).to(xu.dtype)
            return xu.view(stop - start, rows, kmax * dim)

        shared = unfolded(0, 1)[0] if n_tables == 1 else None
        for start in range(0, n_members, chunk):
            stop = min(n_members, start + chunk)
            xu = shared if shared is not None else unfolded(start, stop)
            for i, k in enumerate(kernel_sizes):
                w = gemm_w[i][start:stop]
                if shared is not None:  # shared embeddings: one GEMM for all members of the chunk
                    y = torch.addmm(masks[i], xu[:, : k * dim], w.transpose(0, 1).reshape(k * dim, -1))
                    v, j = y.view(batch, num_windows, stop - start, -1).max(dim=1)
                    vals[i][start:stop], idxs[i][start:stop] = v.transpose(0, 1), j.transpose(0, 1)
                elif stop - start == 1:  # 2-D GEMM on the strided slice: no copy, no batched-GEMM dispatch
                    y = torch.addmm(masks[i], xu[0, :, : k * dim], w[0])
                    torch.max(y.view(batch, num_windows, -1), dim=1, out=(vals[i][start], idxs[i][start]))
                else:
                    y = torch.baddbmm(masks[i].unsqueeze(0), xu[..., : k * dim], w)
                    out = (vals[i][start:stop], idxs[i][start:stop])
                    torch.max(y.view(stop - start, batch, num_windows, -1), dim=2, out=out)
        ctx.save_for_backward(ids, valid, table, *weights, *idxs)
        ctx.kernel_sizes, ctx.pad_token_id, ctx.chunk, ctx.zero_pad = kernel_sizes, pad_token_id, chunk, zero_pad
        return tuple(vals)

    @staticmethod
    def backward(ctx, *grads):
        ids, valid, table, *rest = ctx.saved_tensors
        kernel_sizes = ctx.kernel_sizes
        weights, idxs = rest[: len(kernel_sizes)], rest[len(kernel_sizes) :]
        n_members, n_tables = weights[0].shape[0], table.shape[0]
        vocab, dim = table.shape[1:]
        batch = ids.shape[0]
        flat = table.reshape(n_tables * vocab, dim)
        need_table = ctx.needs_input_grad[7]
        d_flat = torch.zeros_like(flat) if need_table else None
        d_weights = [torch.zeros_like(w) if ctx.needs_input_grad[8 + i] else None for i, w in enumerate(weights)]
        rows = torch.arange(batch, device=ids.device).view(1, 1, batch, 1)
        for start in range(0, n_members, ctx.chunk):
            stop = min(n_members, start + ctx.chunk)
            c = stop - start
            offset = 0 if n_tables == 1 else torch.arange(start, stop, device=ids.device).view(c, 1, 1, 1) * vocab
            for i, k in enumerate(kernel_sizes):
                if grads[i] is None:
                    continue
                w = weights[i][start:stop]  # (c, F, E, k)
                n_f = w.shape[1]
                # (c, F, B): only the argmax windows get gradient
                g = grads[i][start:stop].transpose(1, 2).to(flat.dtype).contiguous()
                pos = idxs[i][start:stop].transpose(1, 2).unsqueeze(-1) + torch.arange(k, device=ids.device)
                tok = ids[rows, pos] + offset  # (c, F, B, k): token under each tap of each argmax window
                if d_weights[i] is not None:
                    win = F.embedding(tok, flat)  # (c, F, B, k, E)
                    if not ctx.zero_pad:
                        win = win * valid[rows, pos].unsqueeze(-1).to(win.dtype)
                    dw = torch.bmm(g.reshape(c * n_f, 1, batch), win.view(c * n_f, batch, k * dim))
                    d_weights[i][start:stop] = dw.view(c, n_f, k, dim).transpose(2, 3)
                if need_table:
                    contrib = g.reshape(c, n_f, batch, 1, 1) * w.permute(0, 1, 3, 2).unsqueeze(2)
                    d_flat.index_add_(0, tok.reshape(-1), contrib.reshape(-1, dim))
        d_table = None
        if need_table:
            d_table = d_flat.view_as(table)
            d_table[:, ctx.pad_token_id] = 0  # padding_idx semantics: padded/masked positions carry no gradient
        return (None, None, None, None, None, None, None, d_table, *d_weights)


def _conv1d_max_pool(table, weights, ids, valid, masks):
    """Reference path: `F.conv1d` per member, same masking; mathematically identical to the fused path."""
    num_windows = masks[0].shape[1]
    per_member = []
    for m in range(weights[0].shape[0]):
        x = F.embedding(ids, table[m if table.shape[0] > 1 else 0]) * valid.unsqueeze(-1).to(table.dtype)
        x = x.transpose(1, 2)
        per_member.append(
            [
                (F.conv1d(x, w[m])[..., :num_windows] + mask.unsqueeze(1)).max(-1).values
                for w, mask in zip(weights, masks)
            ]
        )
    return [torch.stack(vals) for vals in zip(*per_member)]


def member_chunk_size(config: MtCNNConfig, n_members: int, rows: int, device: torch.device, itemsize: int) -> int:
    """Members the fused kernel processes at once: the config's value, else as many as a memory budget allows.

    Args:
        config: Model config (`member_chunk_size` overrides the heuristic).
        n_members: Ensemble size.
        rows: Windows per step (batch * window starts).
        device: Device of the inputs.
        itemsize: Bytes per element of the embeddings.
    """
    if config.member_chunk_size:
        return min(config.member_chunk_size, n_members)
    per_member = rows * max(config.kernel_sizes) * config.embedding_dim * itemsize
    budget = CPU_CHUNK_BYTES if device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    return max(1, min(n_members, budget // max(per_member, 1)))


def conv_max_pool(
    config: MtCNNConfig,
    table: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pooled document embeddings relu(max_t conv(embed(ids)) + b) of every member.

    Args:
        config: Model config (kernel sizes, pad id, implementation, chunking).
        table: Embeddings (N, V, E), or (1, V, E) shared by all members.
        weights: Per kernel size, conv weights (N, F, E, k) (`nn.Conv1d` layout with a leading member axis).
        biases: Per kernel size, conv biases (N, F).
        input_ids: (B, L) token ids.
        attention_mask: Optional (B, L) mask.

    Returns:
        (N, B, F * len(kernel_sizes)) features.
    """
    kernel_sizes = tuple(config.kernel_sizes)
    vocab = table.shape[1]
    tracing = is_tracing()
    if not tracing and input_ids.numel() and bool(((input_ids < 0) | (input_ids >= vocab)).any()):
        # Checked here: ids are offset per member into one flat table, so an out-of-range id would not raise.
        raise ValueError(
            f"input_ids hold ids outside [0, {vocab}) (min {int(input_ids.min())}, max {int(input_ids.max())}); "
            "tokenize with the model's tokenizer or set vocab_size to the tokenizer's length."
        )
    ids, valid, masks = prepare_windows(input_ids, attention_mask, config.pad_token_id, kernel_sizes, table.dtype)
    if config.conv_impl == "conv1d" or tracing:  # export: plain tensor ops (the fused kernel is an autograd.Function)
        vals = _conv1d_max_pool(table, weights, ids, valid, masks)
    else:
        device_type = ids.device.type
        autocast = torch.is_autocast_enabled(device_type)
        gemm_dtype = torch.get_autocast_dtype(device_type) if autocast else table.dtype
        chunk = member_chunk_size(config, weights[0].shape[0], masks[0].numel(), ids.device, table.element_size())
        with torch.autocast(device_type, enabled=False):
            vals = _FusedConvMaxPool.apply(
                ids, valid, masks, kernel_sizes, config.pad_token_id, chunk, gemm_dtype, table, *weights
            )
    return F.relu(torch.cat(vals, -1) + torch.cat(biases, -1).unsqueeze(1))


def multitask_loss(
    logits: dict[str, torch.Tensor],
    labels: torch.LongTensor,
    task_names: list[str],
    member_mask: torch.Tensor | None = None,
    num_items: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-member hard-label multitask loss: :func:`reportkd.losses.multitask_kd_loss` with ``alpha=0``.

    Mean over tasks of each task's cross-entropy over its present labels (the trainers call the same function).

    Args:
        logits: Task -> (N, B, C_t) logits.
        labels: (B, T) class ids in `task_names` order; -100 marks a missing label (ignored, not a class).
        task_names: Task order of the label columns.
        member_mask: Optional (N, B) bool; member m only learns from rows where it is True.
        num_items: Optional (N, T) (or (T,)) denominators: each member's labelled rows per task over a whole
            gradient-accumulation step and all processes, so that accumulation and multi-process runs equal one
            large batch. Default: this batch's counts.

    Returns:
        (N,) losses; a task without present labels (for that member) contributes 0.
    """
    ordered = {task: logits[task] for task in task_names}
    if multitask_kd_loss is None:  # plain transformers, no reportkd: the same loss for a single model
        return _plain_multitask_loss(ordered, labels, member_mask, num_items)
    return multitask_kd_loss(
        ordered, None, labels.to(ordered[task_names[0]].device), alpha=0.0, member_mask=member_mask,
        num_items_in_batch=num_items, sum_members=False,
    )  # fmt: skip


def _plain_multitask_loss(
    logits: dict[str, torch.Tensor],
    labels: torch.LongTensor,
    member_mask: torch.Tensor | None,
    num_items: torch.Tensor | None,
) -> torch.Tensor:
    """``multitask_kd_loss(alpha=0)`` without reportkd: mean over tasks of each task's mean CE over its labels."""
    if member_mask is not None or num_items is not None:
        raise ValueError("member_mask / num_items need reportkd installed (pip install reportkd).")
    total = 0.0
    for i, value in enumerate(logits.values()):
        y = labels[:, i].to(value.device).expand(value.shape[:-1])
        ce = F.cross_entropy(value.flatten(0, -2).float(), y.flatten(), ignore_index=-100, reduction="sum")
        total = total + ce / (y != -100).sum().clamp(min=1)
    return (total / len(logits)).reshape(1)


class MtCNNPreTrainedModel(PreTrainedModel):
    """Weight initialisation and HF plumbing shared by the MtCNN models (FrESCO: Xavier convs/heads, zero biases)."""

    config_class = MtCNNConfig
    base_model_prefix = "mtcnn"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    # The loss is a per-batch mean that ignores `num_items_in_batch`: let `Trainer` scale it for grad accumulation.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_init_std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.Conv1d, nn.Linear)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    @torch.no_grad()
    def _predict(self, fn, temperature: float):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}.")
        was_training = self.training
        self.eval()
        try:
            return fn()
        finally:
            self.train(was_training)


class MtCNNForReportClassification(MtCNNPreTrainedModel):
    """Multitask CNN over word embeddings: one softmax head per task (FrESCO MtCNN).

    Args:
        config: Model configuration; `config.num_members` is ignored (single model).
    """

    def __init__(self, config: MtCNNConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.num_filters, k) for k in config.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.classifiers = nn.ModuleDict(
            {task: nn.Linear(config.hidden_size, n) for task, n in config.num_outputs.items()}
        )
        if config.abstain_class:  # DAC abstention penalties, one per task (tuned by DACTrainer, saved with weights)
            self.register_buffer("dac_alpha", torch.full((len(config.task_names),), float(config.dac_alpha)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MtCNNOutput:
        """Logits of every task and, with labels, the multitask loss.

        With ``config.abstain_class`` each task's logits end with the abstain output and the returned loss is the
        cross-entropy of the real classes (renormalised); the DAC objective itself is computed by ``DACTrainer``.

        Args:
            input_ids: (B, L) token ids (right-padded; documents shorter than the largest kernel are fine).
            attention_mask: Optional (B, L) mask; masked positions are treated as padding.
            labels: Optional (B, T) class ids in `config.task_names` order, -100 for a missing label.
            **kwargs: Ignored (e.g. `num_items_in_batch` from `Trainer`).
        """
        features = conv_max_pool(
            self.config,
            self.embeddings.weight.unsqueeze(0),
            [conv.weight.unsqueeze(0) for conv in self.convs],
            [conv.bias.unsqueeze(0) for conv in self.convs],
            input_ids,
            attention_mask,
        )[0]
        hidden = self.dropout(features)
        logits = {task: self.classifiers[task](hidden) for task in self.config.task_names}
        loss = None
        if labels is not None:
            cut = -1 if self.config.abstain_class else None
            stacked = {task: value[..., :cut].unsqueeze(0) for task, value in logits.items()}
            loss = multitask_loss(stacked, labels, self.config.task_names)[0]
        return MtCNNOutput(loss=loss, logits=logits, doc_embeddings=features)

    def predict_proba(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        temperature: float = 1.0,
        with_abstain: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Class probabilities softmax(logits / temperature) per task, in eval mode and without gradients.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: Optional (B, L) mask.
            temperature: Softmax temperature (> 0).
            with_abstain: DAC models: return the ``C + 1`` probabilities (abstain last) instead of the real
                classes' renormalised ones.
        """
        out = self._predict(lambda: self(input_ids, attention_mask=attention_mask), temperature)
        cut = -1 if self.config.abstain_class and not with_abstain else None
        return {task: F.softmax(value[..., :cut].float() / temperature, dim=-1) for task, value in out.logits.items()}


# save_pretrained writes this file, configuration_mtcnn.py and an auto_map (AutoModel with trust_remote_code).
MtCNNForReportClassification.register_for_auto_class("AutoModel")

__all__ = [
    "MtCNNForReportClassification",
    "MtCNNOutput",
    "MtCNNPreTrainedModel",
    "conv_max_pool",
    "is_tracing",
    "multitask_loss",
    "prepare_windows",
]
