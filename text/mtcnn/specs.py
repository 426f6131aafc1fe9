"""Architecture specs of the MtCNN job: teacher groups (``teacher_archs``) and the student (``student_arch``).

Light on purpose (no torch at import): :mod:`reportkd.text.mtcnn.arguments` validates the job's specs with it before
anything is read or trained. A :class:`TeacherSpec` is one group of a mixed teacher (``"mtcnn"`` members trained
together as one vectorized ensemble, or ``"hisan"`` members trained one by one) with its own sizes, dropout and seed.

Spec strings (command lines, YAML):

- ``teacher_archs``: groups separated by commas, each ``ARCH:MEMBERS`` with optional settings in parentheses,
  e.g. ``"mtcnn:4,hisan:4"`` or ``"mtcnn:4(kernel_sizes=3/4/5),mtcnn:4(kernel_sizes=2/3,dropout=0.3),hisan:4"``.
- ``student_arch``: ``ARCH`` with optional settings, e.g. ``"hisan"`` or ``"hisan(dropout=0.2,attention_heads=8)"``.

Settings: ``embedding_dim``, ``dropout``, ``kernel_sizes`` (``/``-separated) and ``num_filters`` (MtCNN),
``attention_heads``, ``attention_dim_per_head`` and ``words_per_line`` (HiSAN); teacher groups also ``seed``,
``epochs`` and ``member_chunk_size``. Unset sizes are the job's (``embedding_dim``, ``kernel_sizes``,
``num_filters``, ``dropout``), except HiSAN's dropout, which stays 0.1 (the job's 0.5 over-regularises it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arguments import MtCNNJobArguments

ARCHITECTURES = ("mtcnn", "hisan")
HISAN_DEFAULT_DROPOUT = 0.1  # HiSANConfig.dropout (not imported: this module stays free of transformers)
TEACHER_ARCHS_EXAMPLE = '"mtcnn:4,hisan:4" or "mtcnn:4(kernel_sizes=2/3,dropout=0.3),hisan:4(dropout=0.2)"'
STUDENT_ARCH_EXAMPLE = '"mtcnn", "hisan" or "hisan(dropout=0.2,attention_heads=8)"'
_MTCNN_ONLY = ("kernel_sizes", "num_filters", "member_chunk_size")
_HISAN_ONLY = ("attention_heads", "attention_dim_per_head", "words_per_line")
_GROUP_ONLY = ("members", "seed", "member_chunk_size", "epochs")  # not settings of a single student


@dataclass
class TeacherSpec:
    """One group of a mixed teacher (or the student's architecture): architecture, size and hyperparameters.

    Unset model sizes fall back to the job's (``embedding_dim``, ``kernel_sizes``, ``num_filters``; ``dropout`` too
    for MtCNN, while HiSAN keeps its own default of 0.1: the job's 0.5 on every attention level over-regularises it).

    Args:
        architecture: ``"mtcnn"`` (trained as one vectorized ensemble) or ``"hisan"`` (trained member by member).
        members: Members in this group.
        seed: Initialisation seed of the group (None: the training seed + 1000 * group index). The group's
            out-of-fold masks use the same seed.
        embedding_dim: Word embedding size.
        dropout: Dropout of the members.
        kernel_sizes: MtCNN convolution windows.
        num_filters: MtCNN filters per window.
        member_chunk_size: MtCNN members run together (bounded memory, see ``ensemble.py``; None: all).
        attention_heads: HiSAN attention heads.
        attention_dim_per_head: HiSAN size of one head.
        words_per_line: HiSAN words per line.
        epochs: Training epochs of this group (None: the job's ``teacher_epochs``, else ``num_train_epochs``).
    """

    architecture: str = field(default="mtcnn", metadata={"help": "'mtcnn' or 'hisan'."})
    members: int = field(default=8, metadata={"help": "Members in this group."})
    seed: int | None = field(default=None, metadata={"help": "Seed (None: training seed + 1000 * group index)."})
    embedding_dim: int | None = field(default=None, metadata={"help": "Word embedding size (None: the job's)."})
    dropout: float | None = field(default=None, metadata={"help": "Dropout (None: the job's; HiSAN: 0.1)."})
    kernel_sizes: list[int] | None = field(default=None, metadata={"help": "MtCNN windows (None: the job's)."})
    num_filters: int | None = field(default=None, metadata={"help": "MtCNN filters per window (None: the job's)."})
    member_chunk_size: int | None = field(default=None, metadata={"help": "MtCNN members run together."})
    attention_heads: int = field(default=4, metadata={"help": "HiSAN attention heads."})
    attention_dim_per_head: int = field(default=16, metadata={"help": "HiSAN size of one head."})
    words_per_line: int = field(default=15, metadata={"help": "HiSAN words per line."})
    epochs: float | None = field(default=None, metadata={"help": "Epochs (None: the job's teacher epochs)."})

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"TeacherSpec.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        for name in ("members", "embedding_dim", "num_filters", "member_chunk_size", "attention_heads",
                     "attention_dim_per_head", "words_per_line"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"TeacherSpec.{name} must be an integer >= 1, got {value!r}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TeacherSpec.dropout must be in [0, 1), got {self.dropout!r}.")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"TeacherSpec.epochs must be > 0, got {self.epochs!r}.")
        if self.kernel_sizes is not None:
            self.kernel_sizes = [int(k) for k in self.kernel_sizes]
            if not self.kernel_sizes or min(self.kernel_sizes) < 1:
                raise ValueError(f"TeacherSpec.kernel_sizes must be integers >= 1, got {self.kernel_sizes!r}.")
        if self.architecture == "hisan" and (self.kernel_sizes is not None or self.num_filters is not None):
            raise ValueError("kernel_sizes / num_filters are MtCNN settings; a 'hisan' group uses attention_heads, "
                             "attention_dim_per_head and words_per_line.")  # fmt: skip

    @classmethod
    def parse(cls, value: str | dict[str, Any] | TeacherSpec) -> TeacherSpec:
        """A spec from a dict, or a string ``"hisan:members=8,embedding_dim=64"`` (command lines, YAML).

        Args:
            value: The spec.
        """
        if isinstance(value, TeacherSpec):
            return value
        if isinstance(value, dict):
            return cls(**value)
        arch, _, rest = str(value).partition(":")
        return cls(architecture=arch.strip(), **_settings(filter(None, (p.strip() for p in rest.split(",")))))

    def settings(self, architecture_only: bool = False) -> dict[str, Any]:
        """The fields that apply to this architecture (JSON-able; ``architecture_only`` drops the group fields)."""
        skip = set(_HISAN_ONLY if self.architecture == "mtcnn" else _MTCNN_ONLY)
        skip |= set(_GROUP_ONLY) if architecture_only else set()
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def _settings(items) -> dict[str, Any]:
    """``name=value`` items as TeacherSpec keyword arguments (``kernel_sizes`` as ``3/4/5``)."""
    names = {f.name for f in dataclasses.fields(TeacherSpec)} - {"architecture"}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or key not in names:
            raise ValueError(f"Teacher spec item {item!r} is not name=value with a name of {sorted(names)}.")
        try:
            if key == "kernel_sizes":
                out[key] = [int(k) for k in raw.split("/")]
            elif key in ("dropout", "epochs"):
                out[key] = float(raw)
            else:
                out[key] = int(raw)
        except ValueError:
            raise ValueError(f"Teacher spec item {item!r}: {raw!r} is not a number (kernel_sizes: 3/4/5).") from None
    return out


def _split_groups(text: str) -> list[str]:
    """Splits at commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0 or depth > 1:
            raise ValueError("unbalanced parentheses")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError("unbalanced parentheses")
    return [*parts, "".join(current)]


_GROUP = re.compile(r"^\s*([A-Za-z_]+)\s*(?::\s*(\d+)\s*)?(?:\(([^()]*)\))?\s*$")


def _parse_one(text: str, *, members: bool, option: str, example: str) -> TeacherSpec:
    match = _GROUP.match(text)
    if not match or bool(match.group(2)) != members:
        form = "ARCH:MEMBERS or ARCH:MEMBERS(name=value,...)" if members else "ARCH or ARCH(name=value,...)"
        raise ValueError(f"{option} part {text.strip()!r} is not {form}; write e.g. {example}.")
    arch, count, inner = match.group(1).lower(), match.group(2), match.group(3) or ""
    if arch not in ARCHITECTURES:
        raise ValueError(f"{option} names architecture {arch!r}; use {' or '.join(ARCHITECTURES)}, e.g. {example}.")
    settings = _settings(filter(None, (p.strip() for p in inner.split(","))))
    if not members and (bad := sorted(set(settings) & set(_GROUP_ONLY))):
        raise ValueError(f"{option} does not take {', '.join(bad)} (teacher-group settings); e.g. {example}.")
    if count is not None:
        if "members" in settings:
            raise ValueError(f"{option} part {text.strip()!r} gives the members twice; write e.g. {example}.")
        settings["members"] = int(count)
    try:
        return TeacherSpec(architecture=arch, **({} if members else {"members": 1}), **settings)
    except ValueError as e:
        raise ValueError(f"{option} part {text.strip()!r}: {e}") from None


def parse_teacher_archs(value: str | list | None) -> list[TeacherSpec] | None:
    """The teacher groups of ``teacher_archs`` (None: the job's single MtCNN ensemble of ``members``).

    Args:
        value: ``"mtcnn:4,hisan:4(dropout=0.2)"``, a list of such groups / dicts / specs, or None.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (list, tuple)):
        specs = [p if isinstance(p, (TeacherSpec, dict)) else str(p) for p in value]
        out = []
        for p in specs:
            out += [TeacherSpec.parse(p)] if not isinstance(p, str) else parse_teacher_archs(p) or []
        return out or None
    option, example = "teacher_archs", TEACHER_ARCHS_EXAMPLE
    try:
        groups = _split_groups(str(value))
    except ValueError:
        raise ValueError(f"{option} {value!r} has unbalanced parentheses; write e.g. {example}.") from None
    if any(not g.strip() for g in groups):
        raise ValueError(f"{option} {value!r} has an empty group; write e.g. {example}.")
    return [_parse_one(g, members=True, option=option, example=example) for g in groups]


def format_teacher_archs(specs: list[TeacherSpec]) -> str:
    """The canonical ``teacher_archs`` string of ``specs`` (only the settings that differ from the defaults)."""
    return ",".join(_format(s, members=True) for s in specs)


def parse_student_arch(value: str | TeacherSpec | None) -> TeacherSpec:
    """The student's (and baseline's) architecture from ``student_arch`` (``members`` is 1).

    Args:
        value: ``"mtcnn"``, ``"hisan"``, ``"hisan(dropout=0.2)"``, a spec, or None (``"mtcnn"``).
    """
    if isinstance(value, TeacherSpec):
        return value
    text = "mtcnn" if value is None or not str(value).strip() else str(value)
    return _parse_one(text, members=False, option="student_arch", example=STUDENT_ARCH_EXAMPLE)


def format_student_arch(spec: TeacherSpec) -> str:
    """The canonical ``student_arch`` string of ``spec``."""
    return _format(spec, members=False)


def _format(spec: TeacherSpec, *, members: bool) -> str:
    defaults = TeacherSpec(architecture=spec.architecture)
    items = []
    for key, value in spec.settings().items():
        if key in ("architecture", "members") or value == getattr(defaults, key):
            continue
        items.append(f"{key}={'/'.join(map(str, value)) if isinstance(value, list) else value}")
    head = f"{spec.architecture}:{spec.members}" if members else spec.architecture
    return head + (f"({','.join(items)})" if items else "")


def group_job(job: MtCNNJobArguments, spec: TeacherSpec, *, student: bool = False) -> MtCNNJobArguments:
    """The job settings a group's (or the student's) members train with: the spec's sizes over the job's.

    Args:
        job: The job settings.
        spec: The group (or the student's spec).
        student: Keep the job's teacher settings (members, teacher_archs): only the model sizes change.
    """
    changes: dict[str, Any] = {} if student else {"members": spec.members, "teacher_archs": None}
    for name in ("embedding_dim", "dropout", "kernel_sizes", "num_filters"):
        if getattr(spec, name) is not None:
            changes[name] = getattr(spec, name)
    if spec.epochs is not None and not student:
        changes["teacher_epochs"] = spec.epochs
    return dataclasses.replace(job, **changes) if changes else job


def member_config(vocab_size: int, pad_token_id: int, task_labels: dict, job: MtCNNJobArguments, spec: TeacherSpec):
    """The model config of a group's members (``job`` from :func:`group_job`): ``MtCNNConfig`` or ``HiSANConfig``.

    Args:
        vocab_size: Tokenizer vocabulary size.
        pad_token_id: Padding id.
        task_labels: Task -> class names.
        job: The group's job settings (:func:`group_job`).
        spec: The group.
    """
    dropout = job.dropout if spec.architecture == "mtcnn" or spec.dropout is not None else HISAN_DEFAULT_DROPOUT
    common = dict(vocab_size=vocab_size, embedding_dim=job.embedding_dim, dropout=dropout, max_length=job.max_length,
                  pad_token_id=pad_token_id, task_labels=task_labels)  # fmt: skip
    if spec.architecture == "hisan":
        from ..hisan import HiSANConfig

        return HiSANConfig(
            **common,
            attention_heads=spec.attention_heads,
            attention_dim_per_head=spec.attention_dim_per_head,
            words_per_line=spec.words_per_line,
        )
    from .configuration_mtcnn import MtCNNConfig

    return MtCNNConfig(**common, num_filters=job.num_filters, kernel_sizes=list(job.kernel_sizes),
                       num_members=spec.members, member_chunk_size=spec.member_chunk_size)  # fmt: skip


__all__ = [
    "ARCHITECTURES",
    "TeacherSpec",
    "format_student_arch",
    "format_teacher_archs",
    "group_job",
    "member_config",
    "parse_student_arch",
    "parse_teacher_archs",
]
