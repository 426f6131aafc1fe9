"""Recipe: report → synoptic line with a teacher LM and one student (SFT, supervised KD, GKD or speculative KD).

Run it with ``reportkd train skd_report_generation --config x.yaml`` or ``python recipes/skd_report_generation.py``
(commands in that script's docstring); ``benchmarks/skd_ablation.py`` trains several students (``--modes``) from the
same warm start and tabulates them.

Offline (no model hub), the recipe trains a byte-level BPE tokenizer on the training reports, builds teacher and
student from config dicts, fine-tunes the teacher (SFT), warms the student up with a short SFT, then trains the
student in ``mode`` (an ``SKDConfig`` field) and scores teacher, warm start and student on held-out reports (greedy
decoding) with ROUGE-L, BLEU and field-level accuracy. With hub ids (``model_name_or_path``,
``teacher_model_name_or_path``) the same recipe skips the tokenizer and model building.

Outputs: ``<output_dir>/results.json``, each model's generations in ``<output_dir>/predictions/<model>.jsonl``, the
student in ``<output_dir>/<mode>/`` (model or LoRA adapter, tokenizer, ``eval_results.json``,
``distillation.json``, model card) with its checkpoints. ``--resume_from_checkpoint`` (a checkpoint folder or
``last``: the newest in ``<output_dir>/<mode>``) continues the student's training with the saved teacher and warm
start. A non-empty ``output_dir`` is refused unless ``--overwrite_output_dir`` (then ``reuse_checkpoints`` reuses its
tokenizer, teacher and warm start) or resuming.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from reportkd.recipes import RecipeArguments, RecipeParser, prepare_output_dir, recipe_command

from .config import MODES, SKDConfig
from .models import causal_lm_from_config, train_bpe_tokenizer
from .report_task import DEFAULT_DATA, describe_data, format_table, load_splits, score
from .sharding import shard_frozen_model
from .trainer import SKDTrainer

NAME = "skd_report_generation"
logger = logging.getLogger(__name__)


@dataclass
class ScriptArguments(RecipeArguments):
    """Data, schedule and evaluation of the recipe.

    Args:
        data_path: TCGA-schema reports (``.jsonl`` / ``.jsonl.gz``, fields ``text`` and ``synoptic``), or
            ``synthetic:n=400,seed=0`` for generated ones (``reportkd.synthetic``).
        training_data: How the model cards describe the data (default: derived from ``data_path``).
        eval_fraction: Held-out (test) fraction of patients (a stable hash of the patient / report id decides).
        validation_fraction: Fraction of patients held out for validation (0: none); every model is then also
            scored on them, under ``"validation"`` in its results, for choosing settings without the test split.
        max_train_samples: Cap on training reports (None: all).
        max_eval_samples: Cap on held-out reports scored (None: all).
        min_words: Reports with fewer words are skipped (empty / near-empty OCR).
        prompt_words: Words of report text kept in the prompt (diagnostic lines first, in reading order).
        teacher_steps: SFT steps of the teacher (when it is built here).
        teacher_learning_rate: Teacher SFT learning rate.
        student_warmup_steps: SFT steps of the shared student warm start (0: start from the initialisation).
        student_warmup_learning_rate: Learning rate of the student warm start.
        eval_batch_size: Batch size of greedy decoding at evaluation.
        num_threads: torch CPU threads (None: torch's default; 1 is fastest for tiny models on a busy machine).
        reuse_checkpoints: Reuse tokenizer / teacher / warm start found in ``output_dir`` (with
            ``--overwrite_output_dir`` or when resuming) instead of retraining them.
    """

    data_path: str = field(
        default=str(DEFAULT_DATA), metadata={"help": "TCGA-schema reports (.jsonl[.gz]) or synthetic:n=..,seed=.."}
    )
    training_data: str | None = field(default=None, metadata={"help": "Data description for the model cards."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out (test) fraction of patients."})
    validation_fraction: float = field(
        default=0.0, metadata={"help": "Validation fraction of patients (0: none), scored beside the test split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training reports."})
    max_eval_samples: int | None = field(default=300, metadata={"help": "Cap on held-out reports scored."})
    min_words: int = field(default=20, metadata={"help": "Skip reports with fewer words."})
    prompt_words: int = field(default=160, metadata={"help": "Report words kept in the prompt."})
    teacher_steps: int = field(default=600, metadata={"help": "Teacher SFT steps."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "Teacher SFT learning rate."})
    student_warmup_steps: int = field(default=200, metadata={"help": "Student warm-start SFT steps."})
    student_warmup_learning_rate: float = field(default=1e-3, metadata={"help": "Student warm-start learning rate."})
    eval_batch_size: int = field(default=32, metadata={"help": "Greedy decoding batch size."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    reuse_checkpoints: bool = field(default=True, metadata={"help": "Reuse tokenizer/teacher/warm start if saved."})


@dataclass
class ModelArguments:
    """Teacher and student models (hub ids, or configs built here).

    Args:
        model_name_or_path: Student checkpoint or hub id (None: build from ``student_config``).
        tokenizer_name_or_path: Tokenizer (None: the student's, or a BPE tokenizer trained on the reports).
        tokenizer_vocab_size: Size of the BPE tokenizer trained here.
        teacher_config: Config dict of a teacher built here (``model_type`` plus that family's fields).
        student_config: Config dict of a student built here.
        lora_r: LoRA rank of the distilled students (0: full fine-tuning).
        lora_alpha: LoRA scaling.
        lora_target_modules: Modules LoRA adapts.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Student checkpoint or hub id."})
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Tokenizer checkpoint or hub id."})
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the BPE tokenizer trained here."})
    teacher_config: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Teacher config dict (JSON on the command line)."}
    )
    student_config: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Student config dict (JSON on the command line)."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank of the students (0: full fine-tuning)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"help": "LoRA target modules."}
    )

    def __post_init__(self) -> None:
        for name in ("teacher_config", "student_config"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, json.loads(getattr(self, name)))


def make_parser() -> RecipeParser:
    """The recipe's parser: ``ScriptArguments``, ``SKDConfig``, ``ModelArguments`` (``--config x.yaml``)."""
    return RecipeParser((ScriptArguments, SKDConfig, ModelArguments))


def parse_mode(spec: str) -> tuple[str, dict[str, Any]]:
    """``"skd@top_k=5,seed=1"`` → ``("skd", {"top_k": 5, "seed": 1})`` (values parsed as YAML scalars).

    Args:
        spec: A mode, optionally with ``SKDConfig`` overrides after ``@``.
    """
    import yaml

    mode, _, rest = spec.partition("@")
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r} in {spec!r}; choose from {', '.join(MODES)}.")
    known = {f.name for f in dataclasses.fields(SKDConfig)}
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"Bad override {item!r} in {spec!r}: use <SKDConfig field>=<value>.")
        overrides[key] = yaml.safe_load(value)
    return mode, overrides


def run_dir_name(spec: str) -> str:
    """The folder of a student under ``output_dir`` (``skd@top_k=1`` → ``skd_top_k_1``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)


# -- models ----------------------------------------------------------------------------------------------------------
def build_tokenizer(model_args: ModelArguments, train: list[dict], out: Path, reuse: bool):
    """The student's tokenizer, a saved one (``reuse``), or a BPE tokenizer trained on the reports."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name:
        tok = AutoTokenizer.from_pretrained(name)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok
    if reuse and (out / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(out)
    tok = train_bpe_tokenizer((ex["prompt"] + ex["completion"] for ex in train), model_args.tokenizer_vocab_size)
    if PartialState().is_main_process:
        tok.save_pretrained(out)
    return tok


def run_sft(model, tok, train, args: SKDConfig, out: Path, steps: int, lr: float):
    """Supervised fine-tuning with the same trainer (``mode="sft"``); returns the trained model."""
    sft_args = dataclasses.replace(
        args, mode="sft", output_dir=str(out), max_steps=steps, learning_rate=lr, teacher_model_name_or_path=None,
        push_to_hub=False, resume_from_checkpoint=None,
    )  # fmt: skip
    trainer = SKDTrainer(model=model, args=sft_args, train_dataset=_dataset(train), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    return trainer.model


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def _load_or(path: Path, reuse: bool, build):
    from transformers import AutoModelForCausalLM

    if reuse and (path / "config.json").exists():
        logger.info("reusing %s", path)
        return AutoModelForCausalLM.from_pretrained(path), True
    return build(), False


@dataclass
class Setup:
    """What every student of a run shares: data, tokenizer, teacher, the saved warm start, the results so far."""

    out: Path
    tok: Any
    train: list[dict]
    held_out: list[dict]
    teacher: Any
    teacher_name: str
    results: dict[str, dict]
    validation: list[dict] = field(default_factory=list)

    def score(self, name: str, model: Any, args: SKDConfig, script_args: ScriptArguments, extra: dict) -> dict:
        """Scores ``model`` on the test split, and on the validation split (under ``"validation"``) if any."""
        metrics = score(name, model, self.tok, self.held_out, args, script_args, extra, self.out)
        if self.validation:
            valid = score(f"{name}@validation", model, self.tok, self.validation, args, script_args, None, self.out)
            metrics["validation"] = {k: v for k, v in valid.items() if k != "examples"}
        return metrics


def prepare(
    script_args: ScriptArguments, training_args: SKDConfig, model_args: ModelArguments, *, reuse: bool
) -> Setup:
    """Tokenizer, teacher (loaded, or built and fine-tuned) and the student warm start, each scored.

    Args:
        script_args: Data, schedule and evaluation.
        training_args: Training arguments of the students (the teacher and warm start use them with ``mode=sft``).
        model_args: Teacher and student models.
        reuse: Reuse the tokenizer, teacher and warm start saved in ``output_dir`` (and their timings).
    """
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = PartialState()
    train, validation, held_out = load_splits(script_args)
    with state.main_process_first():  # the main process trains and saves the tokenizer, the others load it
        tok = build_tokenizer(model_args, train, out / "tokenizer", reuse)
    results: dict[str, dict] = {}
    if reuse and (out / "results.json").exists():  # ablations add rows to an earlier run
        results = json.loads((out / "results.json").read_text())

    # Teacher: a hub / local checkpoint, or built here and fine-tuned.
    if training_args.teacher_model_name_or_path:
        from transformers import AutoModelForCausalLM

        teacher = AutoModelForCausalLM.from_pretrained(
            training_args.teacher_model_name_or_path, **(training_args.teacher_model_init_kwargs or {})
        )
        teacher_seconds = 0.0
    else:
        if model_args.teacher_config is None:
            raise ValueError(
                "Give teacher_model_name_or_path (a checkpoint) or teacher_config (built and trained here)."
            )
        start = time.perf_counter()
        teacher, reused = _load_or(
            out / "teacher",
            reuse,
            lambda: causal_lm_from_config(model_args.teacher_config, tok, seed=training_args.seed),
        )
        if not reused:
            teacher = run_sft(teacher, tok, train, training_args, out / "teacher", script_args.teacher_steps,
                              script_args.teacher_learning_rate)  # fmt: skip
        teacher_seconds = time.perf_counter() - start
        if reused:  # keep the training time of the run that trained it
            teacher_seconds = results.get("teacher", {}).get("train_seconds", teacher_seconds)
    if training_args.shard_teacher and state.num_processes > 1:  # before any device move: 1/N per device
        teacher = shard_frozen_model(teacher, training_args.device)
    else:
        teacher = teacher.to(training_args.device)
    teacher_name = training_args.teacher_model_name_or_path or (
        f"{model_args.teacher_config['model_type']} teacher built here, fine-tuned on the same reports "
        f"({script_args.teacher_steps} SFT steps)"
    )
    extra = {"train_seconds": teacher_seconds, "parameters": teacher.num_parameters()}
    setup = Setup(out, tok, train, held_out, teacher, "", results, validation)
    results["teacher"] = setup.score("teacher", teacher, training_args, script_args, extra)

    # Shared student warm start.
    def build_student():
        if model_args.model_name_or_path:
            from transformers import AutoModelForCausalLM

            return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
        if model_args.student_config is None:
            raise ValueError("Give model_name_or_path (a checkpoint) or student_config (built here).")
        return causal_lm_from_config(model_args.student_config, tok, seed=training_args.seed + 1)

    start = time.perf_counter()
    student, reused = _load_or(out / "student_init", reuse, build_student)
    if not reused:
        if script_args.student_warmup_steps > 0:
            steps, lr = script_args.student_warmup_steps, script_args.student_warmup_learning_rate
            student = run_sft(student, tok, train, training_args, out / "student_init", steps, lr)
        elif state.is_main_process:
            student.save_pretrained(out / "student_init")
    state.wait_for_everyone()  # every process loads the saved warm start
    student = student.to(training_args.device)
    warm_seconds = time.perf_counter() - start
    if reused:
        warm_seconds = results.get("student_init", {}).get("train_seconds", warm_seconds)
    extra = {"train_seconds": warm_seconds, "parameters": student.num_parameters()}
    results["student_init"] = setup.score("student_init", student, training_args, script_args, extra)
    setup.teacher_name = teacher_name
    return setup


def train_student(
    setup: Setup,
    spec: str,
    script_args: ScriptArguments,
    training_args: SKDConfig,
    model_args: ModelArguments,
    *,
    resume_from_checkpoint: str | None = None,
    repo_suffix: bool = False,
    command: str | None = None,
) -> dict:
    """Trains one student from the saved warm start, scores it, saves it with its card; returns its metrics.

    The student, its checkpoints, ``eval_results.json``, ``distillation.json`` and card go to
    ``<output_dir>/<spec as a folder name>``; ``setup.results`` and ``<output_dir>/results.json`` gain its row.

    Args:
        setup: What :func:`prepare` returned.
        spec: The mode, optionally with ``SKDConfig`` overrides (``skd@top_k=5``, see :func:`parse_mode`).
        script_args: Data, schedule and evaluation.
        training_args: The students' training arguments.
        model_args: Models (LoRA settings).
        resume_from_checkpoint: A checkpoint of this student to continue from.
        repo_suffix: Push to ``<hub_model_id>-<folder>`` (several students of one run).
        command: The command line the model card records.
    """
    from transformers import AutoModelForCausalLM

    mode, overrides = parse_mode(spec)
    out, state = setup.out, PartialState()
    peft_config = None
    if model_args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
            target_modules=list(model_args.lora_target_modules), task_type="CAUSAL_LM",
        )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(out / "student_init")
    run_dir = out / run_dir_name(spec)
    # pushed once below, with the card and metrics (not at every save)
    args = dataclasses.replace(training_args, mode=mode, output_dir=str(run_dir), push_to_hub=False, **overrides)
    trainer = SKDTrainer(model=model, teacher_model=None if mode == "sft" else setup.teacher, args=args,
                         train_dataset=_dataset(setup.train), processing_class=setup.tok,
                         peft_config=peft_config)  # fmt: skip
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    trainer.save_model(str(run_dir))
    logs = [log for log in trainer.state.log_history if "loss" in log]
    extra = {"train_seconds": seconds, "final_loss": logs[-1]["loss"] if logs else None}
    rates = [log["acceptance_rate"] for log in logs if "acceptance_rate" in log]
    if rates:
        extra["acceptance_rate_first"], extra["acceptance_rate_last"] = rates[0], rates[-1]
    speeds = [log["completion_tokens_per_second"] for log in logs if "completion_tokens_per_second" in log]
    extra["completion_tokens_per_second"] = sum(speeds) / len(speeds) if speeds else None
    model = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    metrics = setup.score(spec, model, args, script_args, extra)
    setup.results[spec] = metrics
    if state.is_main_process:
        (out / "results.json").write_text(json.dumps(setup.results, indent=2))
        card_metrics = {k: v for k, v in metrics.items() if k != "examples"}
        (run_dir / "eval_results.json").write_text(json.dumps(card_metrics, indent=2))
    repo_id = training_args.hub_model_id or f"ORG/{out.name}"
    repo_id = f"{repo_id}-{run_dir.name}" if repo_suffix else repo_id
    card = dict(
        teachers=[] if mode == "sft" else [setup.teacher_name], base_model=model_args.model_name_or_path,
        training_data=describe_data(script_args), eval_data=f"{len(setup.held_out)} held-out reports (other patients)",
        command=command or recipe_command(NAME, None),
    )  # fmt: skip
    trainer.create_model_card(repo_id=repo_id, **card)  # distillation.json + README.md (main process)
    if training_args.push_to_hub:  # private repository, or hub_local_dir
        trainer.push_to_hub(folder=run_dir, repo_id=repo_id, commit_message=f"Upload {spec} student")
    return metrics


def print_table(setup: Setup) -> None:
    """The results table of the run (held-out count, then one row per model)."""
    print(f"\nHeld-out reports: {len(setup.held_out)}; greedy decoding; field accuracy = exact match per field.\n")
    print(format_table(setup.results))


def run(
    script_args: ScriptArguments, training_args: SKDConfig, model_args: ModelArguments, command: str | None = None
) -> dict[str, dict]:
    """Trains the teacher, the warm start and one student (``training_args.mode``); returns ``{model: metrics}``.

    Args:
        script_args: Data, schedule and evaluation.
        training_args: The student's training arguments (``resume_from_checkpoint`` resumes its training).
        model_args: Teacher and student models.
        command: The command line the model card records.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = training_args.mode
    parse_mode(spec)  # an unknown mode fails before anything is trained
    out = Path(training_args.output_dir)
    resume = prepare_output_dir(out, training_args.resume_from_checkpoint, overwrite=script_args.overwrite_output_dir,
                                checkpoint_dir=out / run_dir_name(spec))  # fmt: skip
    setup = prepare(script_args, training_args, model_args, reuse=script_args.reuse_checkpoints or bool(resume))
    train_student(setup, spec, script_args, training_args, model_args, resume_from_checkpoint=resume,
                  command=command)  # fmt: skip
    print_table(setup)
    return setup.results


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Parses ``argv`` (default ``sys.argv[1:]``) and runs the recipe; prints the results table.

    Args:
        argv: Command-line arguments (``--config x.yaml`` and flags).
    """
    return run(*make_parser().parse_args_and_config(argv), command=recipe_command(NAME, argv))
