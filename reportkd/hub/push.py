"""Push a saved model folder with its model card to a hub, a self-hosted endpoint or a local hub directory.

What is uploaded is decided file by file (:func:`plan_upload`, rules in :mod:`reportkd.hub.files`): the files the
model kind declares (its allow-list: safetensors weights, configs, tokenizer files, ``thresholds.json``,
``distillation.json``, ``eval_results.json``, declared subfolders), a ``README.md`` card rendered from the kind's
template, and nothing else. Everything left out is listed with the reason (a WARNING on push, the listing on
``dry_run``). Secret-looking names, pickle files and symlinks leading outside the folder are never uploaded;
data-like files (reports, predictions, ``*.jsonl``…) only when ``include`` names them exactly. A push never deletes
files of the destination unless ``delete_missing=True``.

The endpoint is ``endpoint``, else ``$HF_ENDPOINT``, else huggingface.co; the token is ``token``, else the standard
``huggingface_hub`` lookup (``$HF_TOKEN``, then ``hf auth login``). A local hub is a directory holding
``<org>/<name>/`` folders with the files a hub repository would get; ``from_pretrained`` loads them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard

from .cards import render_card
from .files import README, is_pickle_name, resolve_inside, select_files
from .kinds import ModelKind, get_model_kind, matches

logger = logging.getLogger(__name__)

KEEP_REMOTE = (".gitattributes",)  # never deleted, even with delete_missing


@dataclass
class UploadPlan:
    """What a push uploads, leaves out and deletes; the dry run prints exactly this.

    Args:
        folder: The model folder.
        repo_id: Target repository (``org/name``).
        kind: The model kind's name.
        files: Paths uploaded (relative, sorted); ``README.md`` is the generated card when ``card`` is set.
        left_out: Folder entries not uploaded → why (``dir/`` for a folder left out whole).
        card: The generated card (uploaded as ``README.md``), or None when the folder's own README is kept.
        deletions: Destination files this push deletes (only with ``delete_missing``).
    """

    folder: Path
    repo_id: str
    kind: str
    files: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    card: ModelCard | None = None
    deletions: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A human-readable listing: ``+`` uploaded, ``-`` left out, ``x`` deleted (the ``--dry-run`` output)."""
        lines = [f"{self.folder} ({self.kind}) → {self.repo_id}: {len(self.files)} file(s) to upload"]
        for name in self.files:
            if name == README and self.card is not None:
                size = "generated model card" + (", replaces the folder's" if (self.folder / README).exists() else "")
            else:
                size = _size(self.folder / name)
            lines.append(f"  + {name}  ({size})")
        if self.left_out:
            lines.append(f"Left out: {len(self.left_out)}")
            lines += [f"  - {name}  ({why})" for name, why in self.left_out.items()]
        if self.deletions:
            lines.append(f"Deleted from the destination (--delete-missing): {len(self.deletions)}")
            lines += [f"  x {name}" for name in self.deletions]
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


def plan_upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    kind: str | ModelKind | None = None,
    card: bool = True,
    include: Sequence[str] = (),
    license: str | None = None,
) -> UploadPlan:
    """Decides what a push uploads (rules in :mod:`reportkd.hub.files`) and renders the card.

    Args:
        folder: The saved model folder.
        repo_id: Target repository (``org/name``).
        kind: Model kind (detected when None).
        card: Generate ``README.md`` from the kind's template (False: keep the folder's own README, if any).
        include: Extra paths or glob patterns, relative to the folder (data-like files: exact paths only).
        license: Licence in the card's front matter (overrides ``distillation.json``).
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    kind = get_model_kind(kind, folder)
    selection = select_files(folder, kind, include)
    files = [f for f in selection.files if not (card and f == README)]
    for pattern in kind.required:
        if not any(matches(f, pattern) for f in files):
            pickled = [n for n in selection.left_out if is_pickle_name(n)]
            hint = f" It has pickle weights {pickled}: re-save with safetensors." if pickled else ""
            linked = [n for n in selection.left_out if n.startswith(pattern.split("*")[0]) and "symlink" in
                      selection.left_out[n]]  # fmt: skip
            hint += f" {linked} are symlinks leaving the folder: copy the files in (cp -L)." if linked else ""
            raise ValueError(f"{folder} has no file matching {pattern!r}, which a {kind.name} model needs.{hint}")
    rendered = None
    if card:
        rendered = render_card(folder, repo_id, kind=kind, license=license)
        files.append(README)
    return UploadPlan(folder, repo_id, kind.name, sorted(set(files)), selection.left_out, rendered)


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
    delete_missing: bool = False,
) -> PushResult:
    """Uploads a saved model folder with a generated model card (see the module docstring).

    Args:
        folder: The saved model folder (``save_pretrained`` / ``save_classifier`` / ``save_open_clip`` output).
        repo_id: ``org/name``.
        private: Create the repository private (the default; has no effect on an existing repository).
        token: Hub token; None uses ``$HF_TOKEN`` or the ``hf auth login`` token.
        endpoint: Hub URL (self-hosted); None uses ``$HF_ENDPOINT``, else huggingface.co.
        local_hub: Write ``<local_hub>/<org>/<name>/`` instead of uploading.
        dry_run: Only plan: nothing is created, written, uploaded or deleted (``result.plan.describe()``).
        commit_message: Commit message (default: ``"Upload <kind> model with reportkd"``).
        kind: Model kind (detected when None).
        card: Generate ``README.md`` from the template (False: upload the folder's own README, if any).
        include: Extra paths or glob patterns to upload (see :func:`plan_upload`).
        license: Licence in the card's front matter.
        revision: Branch to commit to (hub only).
        delete_missing: Delete the destination's files that this push does not upload, so it mirrors the upload
            (``.gitattributes`` is kept). Off by default: a push only adds and replaces files.
    """
    plan = plan_upload(folder, repo_id, kind=kind, card=card, include=include, license=license)
    if delete_missing:
        existing = _local_files(local_repo_path(local_hub, repo_id)) if local_hub is not None else _remote_files(
            repo_id, endpoint=endpoint, token=token, revision=revision)  # fmt: skip
        plan.deletions = sorted(set(existing) - set(plan.files) - set(KEEP_REMOTE))
    if dry_run:
        where = str(local_repo_path(local_hub, repo_id)) if local_hub else f"{_endpoint_url(endpoint)}/{repo_id}"
        return PushResult(repo_id, where, plan.files, None if local_hub else private, True,
                          None if local_hub else resolve_endpoint(endpoint), plan=plan)  # fmt: skip
    if plan.left_out:
        logger.warning("%s: left out %d file(s) a %s model does not declare: %s", plan.folder, len(plan.left_out),
                       plan.kind, "; ".join(f"{n} ({why})" for n, why in plan.left_out.items()))  # fmt: skip
    if local_hub is not None:
        target = write_local_hub(plan, local_hub)
        return PushResult(repo_id, str(target), plan.files, None, False, None, plan=plan)
    return _upload(plan, private=private, token=token, endpoint=endpoint, revision=revision,
                   commit_message=commit_message or f"Upload {plan.kind} model with reportkd")  # fmt: skip


def _source(plan: UploadPlan, name: str) -> Path:
    """The file to read for ``name``, checked again now: it must still resolve inside the folder."""
    path = resolve_inside(plan.folder, name)
    if path is None:
        raise ValueError(f"{plan.folder / name} changed since the upload was planned (now missing or a symlink "
                         "leaving the folder); push again.")  # fmt: skip
    return path


def _remote_files(repo_id: str, *, endpoint, token, revision) -> list[str]:
    from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return hub_api(endpoint=endpoint, token=token).list_repo_files(repo_id, repo_type="model", revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return []


def _upload(plan: UploadPlan, *, private, token, endpoint, revision, commit_message) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api = hub_api(endpoint=endpoint, token=token)
    url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or plan.repo_id
    operations: list = []
    for name in plan.files:
        if name == README and plan.card is not None:
            operations.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=str(plan.card).encode()))
        else:
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(_source(plan, name))))
    operations += [CommitOperationDelete(path_in_repo=name) for name in plan.deletions]
    info = api.create_commit(repo_id, operations, commit_message=commit_message, repo_type="model", revision=revision)
    logger.info("pushed %d file(s) to %s", len(plan.files), url)
    return PushResult(repo_id, str(url), plan.files, private, False, api.endpoint,
                      commit_url=getattr(info, "commit_url", None), plan=plan)  # fmt: skip


def local_repo_path(local_hub: str | os.PathLike, repo_id: str) -> Path:
    """``<local_hub>/<org>/<name>``: where a local hub keeps ``repo_id`` (refused if it resolves elsewhere)."""
    check_repo_id(repo_id)
    root = Path(local_hub).resolve()
    target = root.joinpath(*repo_id.split("/"))
    if not target.resolve().is_relative_to(root) or target.resolve() == root:
        raise ValueError(f"Repository {repo_id!r} resolves outside the local hub {root}; pick another repo id.")
    return target


def _local_files(target: Path) -> list[str]:
    if not target.is_dir():
        return []
    out = []
    for dirpath, _, filenames in os.walk(target, followlinks=False):
        base = Path(dirpath).relative_to(target)
        out += [(base / f).as_posix() for f in filenames]
    return sorted(out)


def _inside(root: Path, name: str) -> Path:
    dest = root / name
    if not dest.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"Refusing to write {name!r}: it resolves outside the repository folder {root}.")
    return dest


def write_local_hub(plan: UploadPlan, local_hub: str | os.PathLike) -> Path:
    """Writes the planned files to ``<local_hub>/<org>/<name>/`` (keeping its other files unless ``plan.deletions``
    lists them).

    The new repository folder is assembled in a temporary folder beside the target (files kept from the earlier
    push are hard-linked, or copied), then renamed into place: the repository is never half-written, and a crash
    leaves at most a hidden ``.<name>.tmp-*`` or ``.<name>.old-*`` folder beside it. Nothing is written outside
    the repository folder.

    Args:
        plan: The upload plan.
        local_hub: The local hub directory.
    """
    target = local_repo_path(local_hub, plan.repo_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in _local_files(target):
            if name in plan.files or name in plan.deletions:
                continue
            dest = _inside(tmp, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(target / name, dest, follow_symlinks=False)
            except OSError:
                shutil.copy2(target / name, dest, follow_symlinks=False)
        for name in plan.files:
            dest = _inside(tmp, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if name == README and plan.card is not None:
                dest.write_text(str(plan.card), encoding="utf-8")
            else:
                shutil.copy2(_source(plan, name), dest)
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
