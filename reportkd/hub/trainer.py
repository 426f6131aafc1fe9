"""``push_to_hub`` / ``create_model_card`` for the reportkd trainers (mixed into ``DistillationTrainer``).

TRL-like behaviour with reportkd's cards and upload rules: ``trainer.push_to_hub()`` saves the model to
``output_dir``, records its provenance (``distillation.json``: method, teachers, hyperparameters), renders the
model card from the kind's template and uploads safetensors weights, configs, tokenizer and card to a private
repository (or writes them to ``args.hub_local_dir``, a local hub directory). With ``push_to_hub=True`` in the
arguments the same happens at every save; checkpoints themselves (pickled optimizer state) are never uploaded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .cards import METHODS, DistillationInfo, write_card
from .push import PushResult, push_to_hub

# Core training settings reported on the card next to the trainer's own (non-TrainingArguments) fields.
CORE_HYPERPARAMETERS = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                        "num_train_epochs", "seed")  # fmt: skip
NOT_REPORTED = {"teacher_model_name_or_path", "trust_remote_code", "remove_unused_columns", "teacher_outputs_key",
                "teacher_outputs_type", "hub_local_dir"}  # fmt: skip


def training_hyperparameters(args: Any) -> dict[str, Any]:
    """The settings worth a card: the config's own fields (those ``TrainingArguments`` lacks) and core ones.

    Args:
        args: A ``TrainingArguments`` subclass instance.
    """
    from transformers import TrainingArguments

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    names = [n for n in CORE_HYPERPARAMETERS if not (n == "num_train_epochs" and getattr(args, "max_steps", 0) > 0)]
    names += [f.name for f in dataclasses.fields(args) if f.name not in base and f.name not in NOT_REPORTED]
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None or (name == "max_steps" and value <= 0):
            continue
        if name == "beta" and getattr(args, "loss", None) != "generalized_jsd":
            continue  # beta only shapes the generalized JSD
        out[name] = value if isinstance(value, (bool, int, float, str, list, dict)) else str(value)
    world = getattr(args, "world_size", 1)
    out["global_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    return out


class HubMixin:
    """Hub integration of the reportkd trainers (use before ``transformers.Trainer`` in the bases).

    Attributes:
        card_method: Key of the method the card names (``reportkd.hub.METHODS``); None: the config's ``mode`` or
            ``loss`` when one of them is a registered method.
    """

    card_method: str | None = None

    def _card_method(self) -> str | None:
        if self.card_method:
            return self.card_method
        for name in ("mode", "loss"):
            value = getattr(self.args, name, None)
            if isinstance(value, str) and value in METHODS:
                return value
        return None

    def distillation_info(self, **fields: Any) -> DistillationInfo:
        """Provenance known to the trainer (method, teacher, hyperparameters), ``fields`` taking precedence.

        Args:
            **fields: :class:`~reportkd.hub.DistillationInfo` fields (``training_data``, ``method``, ``teachers``…).
        """
        teachers = []
        name = getattr(self.args, "teacher_model_name_or_path", None)
        teacher = getattr(self, "teacher", None)
        if name:
            teachers.append(str(name))
        elif teacher is not None:
            config = getattr(self.accelerator.unwrap_model(teacher), "config", None)
            teachers.append(str(getattr(config, "_name_or_path", "") or type(teacher).__name__))
        trainer_info = DistillationInfo.from_run(
            self._card_method(), teachers=teachers, hyperparameters=training_hyperparameters(self.args)
        )
        return DistillationInfo(**fields).merged(trainer_info)

    def _repo_id(self, repo_id: str | None) -> str:
        fallback = Path(self.args.output_dir).absolute().name
        return repo_id or self.args.hub_model_id or getattr(self, "hub_model_id", None) or fallback

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(DistillationInfo)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"Unknown card fields {unknown}; DistillationInfo has: {', '.join(sorted(known))}.")

    def _record_info(self, folder: str | os.PathLike, fields: dict[str, Any]) -> None:
        # explicit fields win over the folder's distillation.json (e.g. from a recipe), which wins over the trainer's
        info = DistillationInfo(**fields)
        existing = DistillationInfo.load(folder)
        if existing is not None:
            info = info.merged(existing)
        info.merged(self.distillation_info()).save(folder)

    def create_model_card(self, repo_id: str | None = None, folder: str | None = None, **fields: Any) -> None:
        """Writes ``distillation.json`` and the ``README.md`` model card into the saved folder (main process only).

        Args:
            repo_id: Repository named in the card (default: ``hub_model_id`` or the output folder's name).
            folder: The saved model folder (default: ``args.output_dir``).
            **fields: :class:`~reportkd.hub.DistillationInfo` fields to record.
        """
        self._check_fields(fields)
        if not self.is_world_process_zero():
            return
        folder = folder or self.args.output_dir
        self._record_info(folder, fields)
        write_card(folder, self._repo_id(repo_id))

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Creates the hub repository (private unless ``hub_private_repo=False``); nothing for a local hub."""
        if not self.is_world_process_zero():
            return
        self.push_in_progress = None
        repo_id = self._repo_id(None)
        if getattr(self.args, "hub_local_dir", None):
            self.hub_model_id = repo_id
            return
        from .push import hub_api

        private = private if private is not None else self.args.hub_private_repo is not False
        url = hub_api(token=token or self.args.hub_token).create_repo(repo_id, private=private, exist_ok=True)
        self.hub_model_id = url.repo_id

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        *,
        repo_id: str | None = None,
        folder: str | os.PathLike | None = None,
        local_hub: str | os.PathLike | None = None,
        dry_run: bool = False,
        **fields: Any,
    ) -> PushResult | None:
        """Saves the model (unless ``folder`` is given), writes its card and pushes it; see the module docstring.

        Runs on every process (saving may be collective); only the main process uploads and returns the result.

        Args:
            commit_message: Commit message.
            blocking: Ignored (pushes always block).
            token: Hub token (default: ``args.hub_token``, then the standard lookup).
            revision: Branch (default: ``args.hub_revision``).
            private: Create the repository private (default: ``args.hub_private_repo``, True unless set False).
            repo_id: ``org/name`` (default: ``args.hub_model_id``, else the output folder's name).
            folder: An already saved model folder to push instead of saving to ``args.output_dir``
                (e.g. the open_clip folder ``save_student`` writes).
            local_hub: Local hub directory (default: ``args.hub_local_dir``); None uploads to the hub.
            dry_run: Plan only; nothing is uploaded.
            **fields: :class:`~reportkd.hub.DistillationInfo` fields to record (``training_data``, ``method``…).
        """
        self._check_fields(fields)
        if folder is None:
            self.save_model(_internal_call=True)
            folder = self.args.output_dir
        if not self.is_world_process_zero():
            return None
        self._record_info(folder, fields)
        return push_to_hub(
            folder, self._repo_id(repo_id),
            private=private if private is not None else self.args.hub_private_repo is not False,
            token=token or self.args.hub_token, local_hub=local_hub or getattr(self.args, "hub_local_dir", None),
            dry_run=dry_run, commit_message=commit_message, revision=revision or self.args.hub_revision,
        )  # fmt: skip

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if str(getattr(self.args.hub_strategy, "value", self.args.hub_strategy)) == "end":
            return
        self.push_to_hub(commit_message=f"Training in progress, step {self.state.global_step}")
