"""Model cards from templates: what the card needs beyond the weights, and how it is rendered.

A model folder tells the card most of what it says: the config (architecture, label maps), the weights (parameter
count), ``thresholds.json`` (abstention), ``adapter_config.json`` (LoRA) and ``eval_results.json`` (metrics). What
the files cannot tell (teachers, method, training data, hyperparameters, the command) is stored next to them in
``distillation.json`` (:class:`DistillationInfo`, built with :meth:`DistillationInfo.from_run`), written by the
recipes and by the trainers' ``push_to_hub``. :func:`render_card` is the one renderer: every card (``reportkd push``,
``trainer.push_to_hub`` / ``create_model_card``, the recipes through :func:`write_card`) is rendered from a saved
folder with its kind's template (``reportkd/cards/<kind>.md``) and the kind's ``card_context`` variables.

    {"format": "reportkd.distillation.v1", "method": "skd", "teachers": ["org/teacher"], "base_model": null,
     "training_data": "TCGA pathology reports, …", "datasets": [], "eval_data": "…",
     "hyperparameters": {"top_k": 25, …}, "command": "python recipes/…", "license": null}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Registry
from .kinds import ModelKind, get_model_kind

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

DISTILLATION_NAME = "distillation.json"
DISTILLATION_FORMAT = "reportkd.distillation.v1"
EVAL_RESULTS_NAME = "eval_results.json"
DEFAULT_LICENSE = "other"  # the data owner decides; set it with --license or distillation.json
OTHER_LICENSE_NAME = "data-owner-terms"  # license "other": terms set by the owner of the training data
OTHER_LICENSE_LINK = "README.md"  # the card's intended-use and limitations sections state them
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

    @classmethod
    def from_run(
        cls,
        method: str | None,
        *,
        teachers: str | Iterable[str | None] = (),
        training_data: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        losses: Mapping[str, float] | None = None,
        **fields: Any,
    ) -> DistillationInfo:
        """The provenance of a training run, checked now (an unknown method fails before training ends).

        The one builder behind the trainers' ``distillation_info()`` and the recipes' ``distillation.json``.

        Args:
            method: Key of a registered :class:`Method`.
            teachers: Teacher names or paths, or one name (None entries are dropped: a run without a teacher).
            training_data: What the model was trained on, in words.
            hyperparameters: Settings worth reporting, in the card's order.
            losses: Loss name → weight; the active (non-zero) ones are recorded after ``hyperparameters`` as
                ``"loss <name>"``.
            **fields: Other :class:`DistillationInfo` fields (``eval_data``, ``command``, ``base_model``…).
        """
        teachers = [teachers] if isinstance(teachers, str) else teachers
        hp = dict(hyperparameters or {})
        hp.update({f"loss {name}": weight for name, weight in (losses or {}).items() if weight})
        info = cls(method=method, teachers=[t for t in teachers if t], training_data=training_data,
                   hyperparameters=hp, **fields)  # fmt: skip
        info.check()
        return info

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


def card_context(folder: str | Path, repo_id: str, kind: ModelKind, license: str | None = None) -> dict[str, Any]:
    """The template variables of a saved folder: the common ones and the kind's own.

    Common: ``model_name``, ``repo_id``, ``kind_title``, ``method``, ``teachers``, ``base_model``,
    ``training_data``, ``eval_data``, ``datasets``, ``hyperparameters`` / ``hp_rows``, ``command``, ``metrics`` /
    ``metric_rows``, ``parameters``, ``license``, ``reportkd_version``, ``fmt``; from ``distillation.json``,
    ``eval_results.json`` and the weights' headers.

    Args:
        folder: The saved model folder.
        repo_id: The repository named in the card.
        kind: The model kind.
        license: Licence in the front matter (default: ``distillation.json``'s, else ``other``).
    """
    from .. import __version__

    folder = Path(folder)
    info = DistillationInfo.load(folder) or DistillationInfo()
    metrics = read_optional_json(folder, EVAL_RESULTS_NAME) or {}
    method = None
    if info.method:  # a method this version does not know is shown by its key
        method = METHODS.get(info.method) if info.method in METHODS else Method(info.method)
    hp_rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else fmt(v)) for k, v in info.hyperparameters.items()]
    ctx: dict[str, Any] = {
        "model_name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "kind_title": kind.title,
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
        "parameters": format_parameters(count_safetensors_parameters(folder)),
        "license": info.license or DEFAULT_LICENSE,
        "reportkd_version": __version__,
        "fmt": fmt,
    }
    if not ctx["base_model"]:  # a LoRA adapter names its base model in adapter_config.json
        ctx["base_model"] = (read_optional_json(folder, "adapter_config.json") or {}).get("base_model_name_or_path")
    ctx.update(kind.card_context(folder, ctx) if kind.card_context else {})
    ctx["license"] = license or ctx["license"]
    ctx["hub_base_model"] = hub_id(ctx.get("base_model"))
    ctx["command"] = portable_command(ctx.get("command"))
    return ctx


def portable_command(command: str | None) -> str | None:
    """``command`` without local absolute paths (they would leak user names and folders into a public card): a path
    under the current folder becomes relative, any other absolute path keeps only its last two components.

    Args:
        command: The command that produced the model, or None.
    """
    import os
    import shlex

    if not command:
        return command
    cwd = Path.cwd()

    def portable(token: str) -> str:
        key, sep, value = token.partition("=") if token.startswith("--") and "=" in token else ("", "", token)
        if not (value.startswith(("/", "~")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/")):
            return token
        path = Path(os.path.expanduser(value))
        try:
            value = str(path.relative_to(cwd))
        except ValueError:
            value = str(Path("...", *path.parts[-2:])) if len(path.parts) > 2 else path.name
        return f"{key}{sep}{value}"

    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes: leave the words as they are
        tokens = command.split()
    return shlex.join(portable(t) for t in tokens)


def render_card(
    folder: str | Path, repo_id: str, *, kind: str | ModelKind | None = None, license: str | None = None
) -> ModelCard:
    """The model card of a saved folder, rendered from its kind's template: the one card renderer, used by
    ``reportkd push``, the trainers' ``push_to_hub`` / ``create_model_card`` and the recipes (via :func:`write_card`).

    Args:
        folder: The saved model folder.
        repo_id: The repository it is pushed to (``org/name``), used in the card's loading examples.
        kind: The model kind (detected when None).
        license: Licence in the front matter (default: ``distillation.json``'s, else ``other``).
    """
    from huggingface_hub import ModelCard, ModelCardData

    from ..cards import template_path

    kind = get_model_kind(kind, folder)
    ctx = card_context(folder, repo_id, kind, license)
    dataset = (ctx["datasets"] or ["held-out split"])[0]
    eval_results = ctx.get("eval_results")
    if eval_results is None and kind.eval_task_type:
        eval_results = eval_results_for(
            ctx["metrics"], task_type=kind.eval_task_type, dataset=dataset, names=kind.metric_filter
        )
    tags = [*BASE_TAGS, *kind.tags, *ctx.get("tags", []), *([ctx["method_key"]] if ctx["method_key"] else [])]
    other = ctx["license"] == "other"  # the hub's spec: license "other" needs license_name and license_link
    card_data = ModelCardData(
        license=ctx["license"],
        license_name=ctx.get("license_name") or (OTHER_LICENSE_NAME if other else None),
        license_link=ctx.get("license_link") or (OTHER_LICENSE_LINK if other else None),
        library_name=ctx.get("library_name", kind.library_name),
        pipeline_tag=ctx.get("pipeline_tag", kind.pipeline_tag),
        tags=list(dict.fromkeys(tags)),
        base_model=ctx["hub_base_model"],
        datasets=[d for d in ctx["datasets"] if hub_id(d)] or None,
        model_name=ctx["model_name"] if eval_results else None,
        eval_results=eval_results or None,
    )
    return ModelCard.from_template(card_data, template_path=str(template_path(kind.card_template)), **ctx)


def write_card(
    folder: str | Path, repo_id: str, *, kind: str | ModelKind | None = None, license: str | None = None
) -> Path:
    """Renders the model card into ``folder/README.md`` (review or edit it, then push with ``card=False``).

    Args:
        folder: The saved model folder.
        repo_id: The repository it will be pushed to (used in the loading examples).
        kind: Model kind (detected when None).
        license: Licence in the front matter.
    """
    from ..utils import atomic_path

    card = render_card(folder, repo_id, kind=kind, license=license)
    path = Path(folder) / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path


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
