"""Which files of a model folder a push uploads: the kind's allow-list, and the rules no flag overrides.

Each file of the folder (walked without following symlinked folders) gets one verdict, first rule first:

1. a symlink resolving outside the folder (or a broken one): left out, never followed;
2. a secret-looking name (``.env*``, ``credentials*``, ``*secret*``, ``*token*`` except the tokenizer files,
   ``*password*``, ``*.pem``, ``*.key``, ``id_rsa*``, ``.netrc``, ``*api_key*``): never uploaded, even with
   ``include`` (naming one is an error: rename the file if it really holds no secret);
3. a pickle-based file (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``, ``*.pickle``, ``*.joblib``,
   ``*.npy``, ``*.npz``): never uploaded (safetensors only; naming one is an error);
4. a data-like file (``*.jsonl``, ``*.csv``, ``*.tsv``, ``*.parquet``, ``*.arrow``, ``*.xlsx``, ``*.h5``, names
   with ``report``, ``prediction``, ``soft_label``, ``completion``, ``sample``, ``label``, ``patient``,
   ``features``, ``embeddings``): may hold report text or patient-derived data, so uploaded only when ``include``
   names its exact path (a glob does not pick it up);
5. hidden (``.gitattributes``…) and other files outside the kind's allow-list (checkpoints, logs, results):
   uploaded only when an ``include`` pattern matches them;
6. otherwise, a file the kind allows (:attr:`ModelKind.files`): uploaded.

``include`` patterns are relative to the folder; an absolute one or one with ``..`` is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .kinds import TOKENIZER_FILES, ModelKind, matches, matches_any

README = "README.md"
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.joblib", "*.npy", "*.npz")
DATA_PATTERNS = ("*.jsonl", "*.csv", "*.tsv", "*.parquet", "*.arrow", "*.xlsx", "*.xls", "*.h5", "*.hdf5",
                 "*report*", "*prediction*", "*soft_label*", "*completion*", "*sample*", "*label*",
                 "*patient*", "*features*", "*embeddings*")  # fmt: skip
_SECRET = re.compile(r"^\.env|^\.netrc$|credential|secret|passw|token(?!izer)|api[_-]?key|private[_-]?key|^id_rsa"
                     r"|\.pem$|\.key$|\.p12$|\.pfx$")  # fmt: skip
_TOKENIZER_NAMES = {p for p in TOKENIZER_FILES if "*" not in p}
_GLOB_CHARS = set("*?[")

# verdicts (what the listing says)
UPLOAD = "upload"
SYMLINK_OUTSIDE = "symlink to a file outside the folder (never followed)"
SYMLINK_DIR = "symlinked folder (never followed)"
SECRET = "secret-looking name: never uploaded"
PICKLE = "pickle-based file: never uploaded (safetensors only)"
DATA = "data-like file (may hold report text): upload it only by naming it exactly with --include"
HIDDEN = "hidden file: name it with --include to upload it"
NOT_ALLOWED = "not a file a {kind} model declares: name it with --include to upload it"


def is_secret_name(name: str) -> bool:
    """Whether a file name looks like it holds credentials (tokenizer files excepted)."""
    return name not in _TOKENIZER_NAMES and _SECRET.search(name.lower()) is not None


def is_pickle_name(name: str) -> bool:
    """Whether a file name is a pickle-based format (never uploaded)."""
    return matches_any(name.lower(), PICKLE_PATTERNS)


def is_data_name(name: str) -> bool:
    """Whether a file name looks like data (reports, predictions, labels): uploaded only when named exactly."""
    return matches_any(name.lower(), DATA_PATTERNS)


@dataclass
class FileSelection:
    """The verdict on every file of a model folder.

    Args:
        files: Relative paths to upload (sorted; the card is not among them).
        left_out: Relative path (``dir/`` for a folder left out whole) → why it is not uploaded.
    """

    files: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)


def check_include(pattern: str, folder: Path) -> str:
    """An ``include`` pattern, refused when absolute or reaching outside ``folder``; returned ``/``-separated."""
    posix = pattern.replace(os.sep, "/")
    if not posix or PurePosixPath(posix).is_absolute() or Path(pattern).is_absolute() or posix.startswith("~"):
        raise ValueError(f"--include {pattern!r} is not a path inside {folder}: give a path relative to the folder.")
    if ".." in posix.split("/"):
        raise ValueError(f"--include {pattern!r} reaches outside {folder}: only files inside the folder are uploaded.")
    posix = posix.removeprefix("./")
    if posix in (".", ""):
        raise ValueError(f"--include {pattern!r} names the whole folder: name files, subfolders or glob patterns.")
    return posix


def resolve_inside(folder: Path, rel: str) -> Path | None:
    """``folder/rel`` with symlinks resolved, or None when it resolves outside ``folder`` (or does not exist)."""
    root = folder.resolve()
    try:
        target = (folder / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return target if target.is_relative_to(root) and target.is_file() else None


def _folder_pattern(pattern: str, folder: Path) -> str:
    """A subfolder named in ``include`` stands for the files under it (``extras`` → ``extras/**``)."""
    if _GLOB_CHARS & set(pattern) or not (folder / pattern).is_dir():
        return pattern
    if (folder / pattern.rstrip("/")).is_symlink():
        raise ValueError(f"Refusing to upload {pattern} (--include {pattern!r}): {SYMLINK_DIR.split(' (')[0]}.")
    return pattern.rstrip("/") + "/**"


def _walk(folder: Path) -> tuple[list[str], list[str]]:
    """Relative paths of the files (symlinks included, unresolved) and of the symlinked folders, sorted."""
    files, linked_dirs = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if base == "." else base + "/"
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                linked_dirs.append(prefix + d + "/")
                dirnames.remove(d)
        files += [prefix + f for f in filenames]
    return sorted(files), sorted(linked_dirs)


def select_files(folder: str | os.PathLike, kind: ModelKind, include: Sequence[str] = ()) -> FileSelection:
    """Decides file by file what a push of ``folder`` uploads (rules in the module docstring).

    Args:
        folder: The saved model folder.
        kind: Its model kind (the allow-list).
        include: Extra patterns or exact paths, relative to the folder.

    Raises:
        ValueError: An include pattern is absolute or reaches outside the folder, or names a secret-looking,
            pickle-based or outside-pointing file.
        FileNotFoundError: An include pattern matches no file.
    """
    folder = Path(folder)
    patterns = [_folder_pattern(check_include(p, folder), folder) for p in include]
    exact = {p for p in patterns if not (_GLOB_CHARS & set(p))}
    paths, linked_dirs = _walk(folder)
    selection = FileSelection(left_out={d: SYMLINK_DIR for d in linked_dirs})
    matched = dict.fromkeys(patterns, False)
    for rel in paths:
        name = rel.rsplit("/", 1)[-1]
        hits = [p for p in patterns if matches(rel, p)]
        for p in hits:
            matched[p] = True
        named = rel in exact
        if os.path.islink(folder / rel) and resolve_inside(folder, rel) is None:
            verdict = SYMLINK_OUTSIDE
        elif is_secret_name(name):
            verdict = SECRET
        elif is_pickle_name(name):
            verdict = PICKLE
        elif rel == README:
            verdict = UPLOAD  # the folder's own card (replaced by the generated one unless card=False)
        elif is_data_name(name):
            verdict = UPLOAD if named else DATA
        elif hits or (kind.allows(rel) and not any(part.startswith(".") for part in rel.split("/"))):
            verdict = UPLOAD
        else:
            verdict = HIDDEN if any(part.startswith(".") for part in rel.split("/")) else NOT_ALLOWED.format(
                kind=kind.name)  # fmt: skip
        if verdict == UPLOAD:
            selection.files.append(rel)
            continue
        if hits and verdict in (SYMLINK_OUTSIDE, SECRET, PICKLE):
            raise ValueError(f"Refusing to upload {rel} (--include {hits[0]!r}): {verdict.split(':')[0]}.")
        selection.left_out[rel] = verdict
    missing = [p for p, hit in matched.items() if not hit]
    if missing:
        raise FileNotFoundError(f"--include {missing[0]!r} matches no file in {folder}.")
    selection.left_out = _collapse(selection.left_out, selection.files)
    return selection


def _collapse(left_out: dict[str, str], uploaded: list[str]) -> dict[str, str]:
    """Top-level folders none of whose files is uploaded, listed once as ``dir/`` (checkpoints, runs…)."""
    used = {rel.split("/", 1)[0] for rel in uploaded if "/" in rel}
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    for rel, why in left_out.items():
        top = rel.split("/", 1)[0]
        if "/" in rel.rstrip("/") and top not in used and why not in (SECRET, SYMLINK_OUTSIDE, SYMLINK_DIR):
            counts[top] = counts.get(top, 0) + 1
        else:
            out[rel] = why
    for top, n in counts.items():
        out.setdefault(top + "/", f"folder ({n} file(s): checkpoints, logs, outputs): name files with --include")
    return dict(sorted(out.items()))
