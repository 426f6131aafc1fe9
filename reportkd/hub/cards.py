"""Model cards from templates: what the card needs beyond the weights, and how it is rendered.

A model folder tells the card most of what it says: the config (architecture, label maps), the weights (parameter
count), ``thresholds.json`` (abstention), ``adapter_config.json`` (LoRA) and ``eval_results.json`` (metrics). What
the files cannot tell (teachers, method, training data, hyperparameters, the command) is stored next to them in
``distillation.json`` (:class:`DistillationInfo`), written by the recipes and by the trainers' ``push_to_hub``.

    {"format": "reportkd.distillation.v1", "method": "skd", "teachers": ["org/teacher"], "base_model": null,
     "training_data": "TCGA pathology reports, …", "datasets": [], "eval_data": "…",
     "hyperparameters": {"top_k": 25, …}, "command": "python recipes/…", "license": null}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..registry import Registry

DISTILLATION_NAME = "distillation.json"
DISTILLATION_FORMAT = "reportkd.distillation.v1"
EVAL_RESULTS_NAME = "eval_results.json"
DEFAULT_LICENSE = "other"  # the data owner decides; set it with --license or distillation.json
BASE_TAGS = ("reportkd", "knowledge-distillation", "pathology")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Method:
    """A distillation (or training) method as a card names it.

    Args:
        title: What the card calls the method.
        reference: Paper reference (authors, title, venue, year), or None.
        url: Link to the paper, or None.
    """

    title: str
    reference: str | None = None
    url: str | None = None


METHODS: Registry[Method] = Registry("distillation method")
_HINTON = "Hinton, Vinyals and Dean. Distilling the Knowledge in a Neural Network. NIPS Deep Learning Workshop, 2015"
for _key, _method in {
    "ensemble_distillation": Method(
        "Ensemble distillation: soft labels averaged over an ensemble of MtCNN teachers train one student",
        "De Angeli et al. Using ensembles and distillation to optimize the deployment of deep learning models for the "
        "classification of electronic cancer pathology reports. JAMIA Open 5(3), 2022",
        "https://doi.org/10.1093/jamiaopen/ooac075",
    ),
    "hard_label": Method("Supervised training on hard labels (baseline, no teacher)"),
    "deep_abstaining_classifier": Method(
        "Deep Abstaining Classifier: an extra abstain output per task, its penalty tuned toward a target accuracy",
        "Thulasidasan et al. Combating Label Noise in Deep Learning Using Abstention. ICML 2019",
        "https://arxiv.org/abs/1905.10964",
    ),
    "soft_target_kd": Method("Soft-target knowledge distillation", _HINTON, "https://arxiv.org/abs/1503.02531"),
    "generalized_jsd": Method(
        "Generalized Jensen-Shannon divergence distillation (GKD loss)",
        "Agarwal et al. On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes. ICLR 2024",
        "https://arxiv.org/abs/2306.13649",
    ),
    "sft": Method("Supervised fine-tuning on the dataset completions (no teacher)"),
    "supervised_kd": Method(
        "Supervised KD: token-level distillation on the dataset completions",
        _HINTON,
        "https://arxiv.org/abs/1503.02531",
    ),
    "on_policy": Method(
        "On-policy distillation (GKD): the student learns on its own samples, scored by the teacher",
        "Agarwal et al. On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes. ICLR 2024",
        "https://arxiv.org/abs/2306.13649",
    ),
    "seq_kd": Method(
        "Sequence-level KD: the student learns on teacher-generated completions",
        "Kim and Rush. Sequence-Level Knowledge Distillation. EMNLP 2016",
        "https://arxiv.org/abs/1606.07947",
    ),
    "skd": Method(
        "Speculative knowledge distillation: the student drafts, the teacher replaces tokens outside its top-K",
        "Xu et al. Speculative Knowledge Distillation: Bridging the Teacher-Student Gap Through Interleaved Sampling. "
        "ICLR 2025",
        "https://arxiv.org/abs/2410.11325",
    ),
    "mixed": Method(
        "Speculative KD on sampled completions mixed with dataset completions",
        "Xu et al. Speculative Knowledge Distillation: Bridging the Teacher-Student Gap Through Interleaved Sampling. "
        "ICLR 2025",
        "https://arxiv.org/abs/2410.11325",
    ),
    "clip_kd": Method(
        "CLIP distillation (contrastive loss plus logit, feature and interactive-contrastive distillation)",
        "Yang et al. CLIP-KD: An Empirical Study of CLIP Model Distillation. CVPR 2024",
        "https://arxiv.org/abs/2307.12732",
    ),
    "contrastive": Method(
        "CLIP contrastive training without a teacher",
        "Radford et al. Learning Transferable Visual Models From Natural Language Supervision. ICML 2021",
        "https://arxiv.org/abs/2103.00020",
    ),
}.items():
    METHODS.register(_key, _method)


def register_method(key: str, method: Method) -> Method:
    """Adds a method cards can name (``distillation.json``'s ``method``); refuses an existing key.

    Args:
        key: The key recipes and trainers write.
        method: Its title and paper reference.
    """
    return METHODS.register(key, method)


@dataclass
class DistillationInfo:
    """Provenance of a saved model that its files cannot tell (``distillation.json``).

    Args:
        method: Key of a registered :class:`Method` (``METHODS``), e.g. ``"skd"``, ``"ensemble_distillation"``.
        teachers: Teacher models (hub ids, paths or descriptions).
        base_model: The checkpoint the student started from (hub id), or None when trained from scratch.
        training_data: What the model was trained on, in words.
        datasets: Hub dataset ids (front matter ``datasets``).
        eval_data: What the metrics were measured on, in words.
        hyperparameters: Settings worth reporting (JSON-able).
        command: The command that produced the model.
        license: Licence of the weights (front matter); None: ``other`` (decided by the data owner).
        extra: Anything else (kept, shown nowhere by default).
    """

    method: str | None = None
    teachers: list[str] = field(default_factory=list)
    base_model: str | None = None
    training_data: str | None = None
    datasets: list[str] = field(default_factory=list)
    eval_data: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    license: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.teachers = [str(t) for t in self.teachers if t]

    def check(self) -> None:
        """Raises if ``method`` is not a registered method (checked when saving; loading tolerates it)."""
        if self.method is not None and self.method not in METHODS:
            raise ValueError(
                f"Unknown distillation method {self.method!r}. Registered: {', '.join(METHODS.names())}; add one "
                "with reportkd.hub.register_method(key, Method(title, reference, url))."
            )

    def merged(self, other: DistillationInfo) -> DistillationInfo:
        """This info with its empty fields filled from ``other`` (this one wins where both are set)."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                values[f.name] = {**theirs, **mine}
            else:
                values[f.name] = mine if mine not in (None, [], "") else theirs
        return DistillationInfo(**values)

    def save(self, folder: str | Path) -> Path:
        """Writes ``folder/distillation.json`` (atomically)."""
        from ..utils import write_json

        self.check()
        return write_json(Path(folder) / DISTILLATION_NAME, {"format": DISTILLATION_FORMAT, **asdict(self)})

    @classmethod
    def load(cls, folder: str | Path) -> DistillationInfo | None:
        """Reads ``folder/distillation.json``; None when there is none."""
        path = Path(folder) / DISTILLATION_NAME
        if not path.is_file():
            return None
        data = read_json(path)
        if data.get("format") != DISTILLATION_FORMAT:
            raise ValueError(f"{path} has format {data.get('format')!r}, expected {DISTILLATION_FORMAT!r}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; accepted: {sorted(known)}.")
        return cls(**{k: v for k, v in data.items() if k in known})


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file, with the file named in the error when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def read_optional_json(folder: Path, name: str) -> dict[str, Any] | None:
    """``folder/name`` as a dict, or None when absent."""
    path = folder / name
    return read_json(path) if path.is_file() else None


def hub_id(name: str | None) -> str | None:
    """``name`` as a hub repository id (``hf-hub:`` prefix removed), or None when it is a local path / not an id."""
    if not name:
        return None
    name = str(name).removeprefix("hf-hub:")
    if not _HUB_ID.match(name) or Path(name).exists():
        return None
    return name


def fmt(value: Any, digits: int = 3) -> str:
    """Formats a metric for a table: floats to ``digits`` decimals, None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value > 1.0:  # 1.0000000000000002: the unreachable-target threshold
            return "> 1 (always abstains)" if value < 1.0 + 1e-9 else f"{value:.{digits}f}"
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def format_parameters(n: int | None) -> str | None:
    """``1234567`` → ``"1.23M (1,234,567)"``."""
    if not n:
        return None
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit} ({n:,})"
    return str(n)


def count_safetensors_parameters(folder: Path, names: list[str] | None = None) -> int | None:
    """Parameters stored in the folder's ``*.safetensors`` files, read from their headers (no tensor is loaded)."""
    from safetensors import safe_open

    files = [folder / n for n in names] if names else sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                total += math.prod(f.get_slice(key).get_shape())
    return total


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics flattened to ``"a/b": value`` (scalars only; lists such as examples are dropped)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, prefix=f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out


def context_from_info(
    info: DistillationInfo,
    metrics: Mapping[str, Any],
    repo_id: str,
    kind_title: str,
    parameters: int | None = None,
) -> dict[str, Any]:
    """Template variables every card uses.

    Args:
        info: The model's provenance.
        metrics: Its evaluation results (flat, or nested per task).
        repo_id: The repository named in the card.
        kind_title: What the card calls the model kind.
        parameters: Parameter count.
    """
    from .. import __version__

    method = None
    if info.method:  # a method this version does not know is shown by its key
        method = METHODS.get(info.method) if info.method in METHODS else Method(info.method)
    hp_rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else fmt(v)) for k, v in info.hyperparameters.items()]
    return {
        "model_name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "kind_title": kind_title,
        "method": asdict(method) if method else None,
        "method_key": info.method,
        "teachers": info.teachers,
        "base_model": info.base_model,
        "training_data": info.training_data,
        "eval_data": info.eval_data,
        "datasets": list(info.datasets),
        "hyperparameters": dict(info.hyperparameters),
        "hp_rows": hp_rows,
        "command": info.command,
        "metrics": dict(metrics),
        "metric_rows": [(k, fmt(v)) for k, v in flat_metrics(metrics).items()],
        "parameters": format_parameters(parameters),
        "license": info.license or DEFAULT_LICENSE,
        "reportkd_version": __version__,
        "fmt": fmt,
    }


def common_context(folder: Path, repo_id: str, kind_title: str) -> dict[str, Any]:
    """:func:`context_from_info` of a saved folder: ``distillation.json``, ``eval_results.json``, the weights."""
    info = DistillationInfo.load(folder) or DistillationInfo()
    metrics = read_optional_json(folder, EVAL_RESULTS_NAME) or {}
    return context_from_info(info, metrics, repo_id, kind_title, count_safetensors_parameters(folder))


def eval_results_for(
    metrics: Mapping[str, Any], *, task_type: str, dataset: str, names: Callable[[str], bool] | None = None
) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries (front matter ``model-index``) for the numeric metrics chosen."""
    from huggingface_hub import EvalResult

    results = []
    for name, value in flat_metrics(metrics).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (names and not names(name)):
            continue
        results.append(
            EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset, metric_type=name,
                       metric_name=name, metric_value=float(value))
        )  # fmt: skip
    return results
