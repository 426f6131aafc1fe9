"""Output folders and resuming, shared by every recipe (``accelerate`` is imported only to synchronise).

A recipe refuses to write into a non-empty ``output_dir`` unless ``--overwrite_output_dir`` is given or it resumes;
``--resume_from_checkpoint`` is a ``checkpoint-N`` folder, or ``last`` / ``true`` for the newest one in the folder
where the recipe's trainer writes its checkpoints. Both are checked before anything is trained, by every process
before any of them writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LAST = ("last", "true")


@dataclass
class RecipeArguments:
    """Options every recipe shares (its ``ScriptArguments`` inherit them).

    Args:
        overwrite_output_dir: Write into a non-empty ``output_dir`` (files of an earlier run are replaced).
    """

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into a non-empty output_dir (replaces an earlier run's files)."}
    )


def last_checkpoint(folder: str | Path) -> Path | None:
    """The ``checkpoint-N`` sub-folder of ``folder`` with the largest N (None when there is none).

    Args:
        folder: Where a trainer saved its checkpoints.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, checkpoint_dir: str | Path) -> str | None:
    """The checkpoint folder to resume from (None: start afresh); a missing one is an error.

    Args:
        resume_from_checkpoint: A ``checkpoint-N`` folder, ``last`` / ``true`` (newest in ``checkpoint_dir``),
            or None / ``""`` / ``false``.
        checkpoint_dir: Where the recipe's trainer saves its checkpoints (its ``output_dir``).
    """
    value = resume_from_checkpoint
    if value is None or value is False or str(value).strip().lower() in ("", "false", "none"):
        return None
    if value is True or str(value).strip().lower() in LAST:
        found = last_checkpoint(checkpoint_dir)
        if found is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value}: no checkpoint-N folder in {checkpoint_dir}; train with "
                "save_strategy=steps first, or drop --resume_from_checkpoint to start afresh."
            )
        return str(found)
    path = Path(str(value))
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: no such checkpoint folder; give a checkpoint-N folder of an earlier "
            f"run or 'last'."
        )
    return str(path)


def check_output_dir(output_dir: str | Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuses a non-empty ``output_dir`` unless overwriting or resuming.

    Args:
        output_dir: The recipe's output folder.
        overwrite: ``--overwrite_output_dir`` was given.
        resuming: The run resumes from a checkpoint.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {path} is a file; give a folder.")
    if overwrite or resuming or not path.is_dir() or not any(path.iterdir()):
        return
    raise ValueError(
        f"output_dir {path} is not empty; pass --overwrite_output_dir to replace its run, "
        "--resume_from_checkpoint last to continue it, or another --output_dir."
    )


def prepare_output_dir(
    output_dir: str | Path,
    resume_from_checkpoint: str | bool | None,
    *,
    overwrite: bool,
    checkpoint_dir: str | Path | None = None,
) -> str | None:
    """Checks ``output_dir`` and resolves the checkpoint to resume from, before anything is trained.

    Args:
        output_dir: The recipe's output folder.
        resume_from_checkpoint: The ``--resume_from_checkpoint`` value.
        overwrite: ``--overwrite_output_dir`` was given.
        checkpoint_dir: Where the trainer saves checkpoints, for ``last`` (default: ``output_dir``).

    Returns:
        The checkpoint folder to pass to ``trainer.train(resume_from_checkpoint=...)``, or None.
    """
    checkpoint = resolve_checkpoint(resume_from_checkpoint, checkpoint_dir or output_dir)
    check_output_dir(output_dir, overwrite=overwrite, resuming=checkpoint is not None)
    _wait_for_everyone()  # under accelerate launch no process writes before every process has checked
    return checkpoint


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()
