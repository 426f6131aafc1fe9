"""Push a saved model folder with its model card to a hub, a self-hosted endpoint or a local hub directory.

What is uploaded is decided file by file (:func:`plan_upload`): the folder's top-level model files (safetensors
weights, JSON configs, tokenizer files), a ``README.md`` model card rendered from the kind's template, and nothing
else. Pickle files (``*.bin``, ``*.pt``, ``training_args.bin``…), checkpoints, logs and data-like files
(``*.jsonl``, ``*.csv``, predictions, soft labels: they may hold report text) are skipped and listed with the reason;
``include`` adds files explicitly.

The endpoint is ``endpoint``, else ``$HF_ENDPOINT``, else huggingface.co; the token is ``token``, else the standard
``huggingface_hub`` lookup (``$HF_TOKEN``, then ``hf auth login``). A local hub is a directory holding
``<org>/<name>/`` folders with exactly the files a hub repository would get; ``from_pretrained`` loads them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard

from .kinds import ModelKind, get_model_kind, render_card

logger = logging.getLogger(__name__)

README = "README.md"
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.txt", "*.model", "*.tiktoken", README)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib", "*.npy", "*.npz")
# JSON files that are logs or may carry report text, not model files
NOT_MODEL_FILES = ("trainer_state.json", "results.json", "all_results.json", "train_results.json",
                   "soft_labels*", "completions*", "predictions*")  # fmt: skip


@dataclass
class UploadPlan:
    """What a push would upload.

    Args:
        folder: The model folder.
        repo_id: Target repository (``org/name``).
        kind: The model kind's name.
        files: Folder files uploaded (relative paths, sorted); ``README.md`` is listed when it is the card.
        skipped: Folder entries not uploaded → why.
        card: The generated card (uploaded as ``README.md``), or None when the folder's own README is kept.
    """

    folder: Path
    repo_id: str
    kind: str
    files: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    card: ModelCard | None = None

    def describe(self) -> str:
        """A human-readable listing (the ``--dry-run`` output)."""
        lines = [f"{self.folder} ({self.kind}) → {self.repo_id}: {len(self.files)} file(s)"]
        for name in self.files:
            if name == README and self.card is not None:
                size = "generated model card" + (", replaces the folder's" if (self.folder / README).exists() else "")
            else:
                size = _size(self.folder / name)
            lines.append(f"  + {name}  ({size})")
        for name, why in sorted(self.skipped.items()):
            lines.append(f"  - {name}  (skipped: {why})")
        return "\n".join(lines)


@dataclass
class PushResult:
    """Where a push went.

    Args:
        repo_id: The repository.
        location: Repository URL (hub) or folder (local hub).
        files: The files uploaded (or that would be, on a dry run).
        private: Whether the repository was created private (hub only).
        dry_run: Nothing was uploaded.
        endpoint: The hub endpoint used (None for a local hub).
        commit_url: The commit's URL (hub only).
        plan: The upload plan.
    """

    repo_id: str
    location: str
    files: list[str]
    private: bool | None
    dry_run: bool
    endpoint: str | None
    commit_url: str | None = None
    plan: UploadPlan | None = None


def resolve_endpoint(endpoint: str | None = None) -> str | None:
    """``endpoint``, else ``$HF_ENDPOINT`` (read now, not at import), else None (huggingface_hub's default)."""
    value = endpoint or os.environ.get("HF_ENDPOINT") or None
    return value.rstrip("/") if value else None


def _endpoint_url(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return resolve_endpoint(endpoint) or constants.ENDPOINT


def hub_api(*, endpoint: str | None = None, token: str | None = None):
    """An ``HfApi`` for ``endpoint`` (see :func:`resolve_endpoint`) and ``token`` (None: the standard lookup)."""
    from huggingface_hub import HfApi

    from .. import __version__

    return HfApi(endpoint=resolve_endpoint(endpoint), token=token, library_name="reportkd",
                 library_version=__version__)  # fmt: skip


def check_repo_id(repo_id: str) -> str:
    """Validates ``org/name`` (or ``name``) with huggingface_hub's rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"Invalid repository id {repo_id!r}: {e} Use 'org/name'.") from None
    return repo_id


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def plan_upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    kind: str | ModelKind | None = None,
    card: bool = True,
    include: Sequence[str] = (),
    license: str | None = None,
) -> UploadPlan:
    """Decides what a push uploads (see the module docstring) and renders the card.

    Args:
        folder: The saved model folder.
        repo_id: Target repository (``org/name``).
        kind: Model kind (detected when None).
        card: Generate ``README.md`` from the kind's template (False: keep the folder's own README, if any).
        include: Extra glob patterns (relative to the folder, may reach into subfolders) to upload as well.
        license: Licence in the card's front matter (overrides ``distillation.json``).
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    kind = get_model_kind(kind, folder)
    files, skipped = [], {}
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if entry.is_dir():
            skipped[name + "/"] = "folder (checkpoints, logs, outputs); upload it with include= if needed"
        elif name.startswith("."):
            skipped[name] = "hidden file"
        elif _matches(name, PICKLE_PATTERNS):
            skipped[name] = "pickle-based file; only safetensors weights are uploaded"
        elif _matches(name, NOT_MODEL_FILES) or not _matches(name, MODEL_FILE_PATTERNS):
            skipped[name] = "not a model file (may hold data); pass include= to upload it"
        elif name == README and card:
            continue  # replaced by the generated card (keep it with card=False / --no-card)
        else:
            files.append(name)
    for pattern in include:
        matched = [p for p in folder.glob(pattern) if p.is_file()]
        if not matched:
            raise FileNotFoundError(f"include pattern {pattern!r} matches no file in {folder}.")
        for path in matched:
            rel = path.relative_to(folder).as_posix()
            if _matches(path.name, PICKLE_PATTERNS):
                raise ValueError(f"Refusing to upload {rel}: pickle-based files are never uploaded (use safetensors).")
            if rel not in files:
                files.append(rel)
            skipped.pop(rel, None)
    for pattern in kind.include:  # the kind's optional extras (e.g. a text encoder subfolder)
        for path in sorted(p for p in folder.glob(pattern) if p.is_file() and not _matches(p.name, PICKLE_PATTERNS)):
            rel = path.relative_to(folder).as_posix()
            if rel not in files:
                files.append(rel)
            skipped.pop(rel.split("/")[0] + "/", None)
    for pattern in kind.required:
        if not any(fnmatch.fnmatch(f, pattern) for f in files):
            pickled = [n for n in skipped if _matches(n, PICKLE_PATTERNS)]
            hint = f" It has pickle weights {pickled}: re-save with safetensors." if pickled else ""
            raise ValueError(f"{folder} has no file matching {pattern!r}, which a {kind.name} model needs.{hint}")
    rendered = None
    if card:
        rendered = render_card(folder, repo_id, kind=kind, license=license)
        files.append(README)
    return UploadPlan(folder, repo_id, kind.name, sorted(set(files)), skipped, rendered)


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    local_hub: str | os.PathLike | None = None,
    dry_run: bool = False,
    commit_message: str | None = None,
    kind: str | ModelKind | None = None,
    card: bool = True,
    include: Sequence[str] = (),
    license: str | None = None,
    revision: str | None = None,
    prune: bool = True,
) -> PushResult:
    """Uploads a saved model folder with a generated model card (see the module docstring).

    Args:
        folder: The saved model folder (``save_pretrained`` / ``save_classifier`` / ``save_open_clip`` output).
        repo_id: ``org/name``.
        private: Create the repository private (the default; has no effect on an existing repository).
        token: Hub token; None uses ``$HF_TOKEN`` or the ``hf auth login`` token.
        endpoint: Hub URL (self-hosted); None uses ``$HF_ENDPOINT``, else huggingface.co.
        local_hub: Write ``<local_hub>/<org>/<name>/`` instead of uploading (replacing an earlier push).
        dry_run: Only plan: nothing is created, written or uploaded.
        commit_message: Commit message (default: ``"Upload <kind> model with reportkd"``).
        kind: Model kind (detected when None).
        card: Generate ``README.md`` from the template (False: upload the folder's own README, if any).
        include: Extra glob patterns of files to upload.
        license: Licence in the card's front matter.
        revision: Branch to commit to (hub only).
        prune: Delete files of an existing hub repository that this push does not upload, so the repository
            mirrors the folder as a local hub push does (``.gitattributes`` is kept).
    """
    plan = plan_upload(folder, repo_id, kind=kind, card=card, include=include, license=license)
    if dry_run:
        where = str(local_repo_path(local_hub, repo_id)) if local_hub else f"{_endpoint_url(endpoint)}/{repo_id}"
        return PushResult(repo_id, where, plan.files, None if local_hub else private, True,
                          None if local_hub else resolve_endpoint(endpoint), plan=plan)  # fmt: skip
    if local_hub is not None:
        target = write_local_hub(plan, local_hub)
        return PushResult(repo_id, str(target), plan.files, None, False, None, plan=plan)
    return _upload(plan, private=private, token=token, endpoint=endpoint, revision=revision, prune=prune,
                   commit_message=commit_message or f"Upload {plan.kind} model with reportkd")  # fmt: skip


def _upload(plan: UploadPlan, *, private, token, endpoint, revision, prune, commit_message) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = hub_api(endpoint=endpoint, token=token)
    url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or plan.repo_id
    operations: list = []
    for name in plan.files:
        if name == README and plan.card is not None:
            operations.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=str(plan.card).encode()))
        else:
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(plan.folder / name)))
    if prune:
        existing = api.list_repo_files(repo_id, repo_type="model", revision=revision)
        stale = sorted(set(existing) - set(plan.files) - {".gitattributes"})
        operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
    info = api.create_commit(repo_id, operations, commit_message=commit_message, repo_type="model", revision=revision)
    logger.info("pushed %d file(s) to %s", len(plan.files), url)
    return PushResult(repo_id, str(url), plan.files, private, False, api.endpoint,
                      commit_url=getattr(info, "commit_url", None), plan=plan)  # fmt: skip


def local_repo_path(local_hub: str | os.PathLike, repo_id: str) -> Path:
    """``<local_hub>/<org>/<name>``: where a local hub keeps ``repo_id``."""
    check_repo_id(repo_id)
    return Path(local_hub).joinpath(*repo_id.split("/"))


def write_local_hub(plan: UploadPlan, local_hub: str | os.PathLike) -> Path:
    """Writes the planned files to ``<local_hub>/<org>/<name>/``, replacing an earlier push.

    The files are copied into a temporary folder beside the target, which is then renamed into place (the earlier
    folder is renamed away first): the repository folder is never half-written, and a crash leaves at most a hidden
    ``.<name>.tmp-*`` or ``.<name>.old-*`` folder beside it.
    """
    target = local_repo_path(local_hub, plan.repo_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in plan.files:
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name == README and plan.card is not None:
                dest.write_text(str(plan.card), encoding="utf-8")
            else:
                shutil.copy2(plan.folder / name, dest)
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d file(s) to %s", len(plan.files), target)
    return target


def write_card(
    folder: str | os.PathLike, repo_id: str, *, kind: str | None = None, license: str | None = None
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
    path = Path(folder) / README
    with atomic_path(path) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return path
