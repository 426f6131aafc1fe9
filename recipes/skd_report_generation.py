"""Report → synoptic line: a teacher LM, then students by SFT, supervised KD, on-policy KD (GKD) and speculative KD.

The task: read a pathology report, write its synoptic line
``organ: … | histology: … | grade: … | t_stage: … | laterality: … | behavior: …``.

Offline (no model hub), the recipe trains a byte-level BPE tokenizer on the training reports, builds teacher and
student from config dicts, fine-tunes the teacher (SFT), warms the student up with a short SFT, then trains one
student per mode from that same warm start with the same budget, and scores every model on held-out reports
(greedy decoding) with ROUGE-L, BLEU and field-level accuracy. With hub ids (``model_name_or_path``,
``teacher_model_name_or_path``) the same recipe skips the tokenizer and model building.

    # CPU, seconds: tiny models on synthetic reports (tests run it)
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_quick.yaml
    # TCGA reports on CPU (~30 minutes), or only some modes / an ablation
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_cpu.yaml
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_cpu.yaml --modes sft skd skd@top_k=5
    # several GPUs (the global batch is per_device_train_batch_size x processes)
    accelerate launch --multi_gpu --num_processes 4 recipes/skd_report_generation.py \
        --config recipes/configs/skd_report_gpu.yaml
    # LoRA students (adapters saved next to the shared warm start), hub models
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_gpu.yaml --lora_r 16 \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --teacher_model_name_or_path <SFT'd teacher>
    # push every student (private repositories <hub_model_id>-<mode>) or write them to a local hub folder
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_quick.yaml \
        --push_to_hub --hub_model_id org/skd-student --hub_local_dir /models/hub

YAML keys are the field names of :class:`ScriptArguments`, ``SKDConfig`` and :class:`ModelArguments` (plus
``env:``); flags override them. Results go to ``<output_dir>/results.json`` and each model's generations to
``<output_dir>/predictions/<model>.jsonl`` (re-score them with ``reportkd evaluate generations --predictions
<file>``); the table is printed at the end. Each student's folder ``<output_dir>/<mode>/`` holds the model (or LoRA
adapter), tokenizer, ``eval_results.json``, ``distillation.json`` and a model card (``reportkd push`` uploads it).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
if __name__ == "__main__":
    from _env import apply_env

    apply_env(sys.argv[1:])  # the config's env: block, before torch / transformers read the environment
from _parser import RecipeParser  # noqa: E402
from reportkd.text.skd import MODES, SKDConfig, SKDTrainer, interleaved_sample  # noqa: E402
from reportkd.text.skd.data import PromptCompletionCollator  # noqa: E402
from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer  # noqa: E402

from reportkd.metrics import evaluate_generations  # noqa: E402

logger = logging.getLogger("skd_report_generation")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tcga-reports" / "reports.jsonl.gz"
FIELDS = ("organ", "histology", "grade", "t_stage", "laterality", "behavior")
KEYWORDS = re.compile(
    r"diagnos|carcinom|adenocarc|sarcom|lymphom|melanom|gliom|glioblast|astrocyt|oligoden|neoplas|tumou?r|"
    r"malignan|benign|in situ|metasta|grade|differentiat|fuhrman|gleason|nottingham|stage|\bp?t[0-4x]|\bpt\b|"
    r"left|right|bilateral|midline|histolog|type|invasi|lobe|kidney|renal|lung|brain|colon|rect|prostat|uter|"
    r"endometri|ovar|cervi|bladder|urothel|liver|hepat|pancrea|head and neck|squamous|tongue|larynx|serous",
    re.IGNORECASE,
)


@dataclass
class ScriptArguments:
    """Data, schedule and evaluation of the recipe.

    Args:
        data_path: TCGA-schema reports (``.jsonl`` / ``.jsonl.gz``, fields ``text`` and ``synoptic``), or
            ``synthetic:n=400,seed=0`` for generated ones (``reportkd.synthetic``).
        training_data: How the model cards describe the data (default: derived from ``data_path``).
        eval_fraction: Held-out fraction of patients (a stable hash of the patient / report id decides).
        max_train_samples: Cap on training reports (None: all).
        max_eval_samples: Cap on held-out reports scored (None: all).
        min_words: Reports with fewer words are skipped (empty / near-empty OCR).
        prompt_words: Words of report text kept in the prompt (diagnostic lines first, in reading order).
        modes: Student modes to train from the same warm start (any of SKDConfig's modes), each optionally with
            SKDConfig overrides for ablations: ``skd@top_k=5`` or ``sft@seed=1,learning_rate=5e-4``.
        teacher_steps: SFT steps of the teacher (when it is built here).
        teacher_learning_rate: Teacher SFT learning rate.
        student_warmup_steps: SFT steps of the shared student warm start (0: start from the initialisation).
        student_warmup_learning_rate: Learning rate of the student warm start.
        eval_batch_size: Batch size of greedy decoding at evaluation.
        num_threads: torch CPU threads (None: torch's default; 1 is fastest for tiny models on a busy machine).
        reuse_checkpoints: Reuse tokenizer / teacher / warm start found in ``output_dir`` instead of retraining.
    """

    data_path: str = field(
        default=str(DEFAULT_DATA), metadata={"help": "TCGA-schema reports (.jsonl[.gz]) or synthetic:n=..,seed=.."}
    )
    training_data: str | None = field(default=None, metadata={"help": "Data description for the model cards."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out fraction of patients."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training reports."})
    max_eval_samples: int | None = field(default=300, metadata={"help": "Cap on held-out reports scored."})
    min_words: int = field(default=20, metadata={"help": "Skip reports with fewer words."})
    prompt_words: int = field(default=160, metadata={"help": "Report words kept in the prompt."})
    modes: list[str] = field(
        default_factory=lambda: ["sft", "supervised_kd", "on_policy", "skd"],
        metadata={"help": "Student modes: " + ", ".join(MODES)},
    )
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


# -- data ----------------------------------------------------------------------------------------------------------
def clean_report(text: str, max_words: int) -> str:
    """OCR noise out, diagnostic lines first: keeps up to ``max_words`` words, lower-cased, in reading order.

    Args:
        text: Raw OCR'd report.
        max_words: Word budget.
    """
    lines = []
    for line in str(text or "").splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        chars = line.replace(" ", "")
        letters = sum(c.isalpha() for c in chars)
        barcode = sum(c in "iIl1|!" for c in chars)  # OCR'd barcodes: rows of I, l, 1
        if len(chars) < 3 or letters < 0.6 * len(chars) or barcode > 0.4 * len(chars):
            continue
        if re.search(r"uuid|tcga-|redacted", line, re.IGNORECASE):
            continue
        lines.append(line.lower())
    ranked = sorted(range(len(lines)), key=lambda i: (not KEYWORDS.search(lines[i]), i))
    chosen, words = set(), 0
    for i in ranked:
        n = len(lines[i].split())
        if words + n > max_words and chosen:
            continue
        chosen.add(i)
        words += n
    return "\n".join(lines[i] for i in sorted(chosen))


def make_example(record: dict, prompt_words: int) -> dict:
    """Prompt / completion pair of one report."""
    report = clean_report(record["text"], prompt_words)
    return {"prompt": f"report:\n{report}\nsynoptic:", "completion": " " + record["synoptic"].strip()}


def read_records(spec: str) -> list[dict]:
    """Report records from a TCGA-schema ``.jsonl[.gz]`` file or ``synthetic:n=..,seed=..``."""
    if spec.startswith("synthetic"):
        from reportkd.synthetic import generate_reports

        options = {"n": 400, "seed": 0}
        for item in filter(None, spec.partition(":")[2].split(",")):
            key, _, value = item.partition("=")
            if key not in options:
                raise ValueError(f"Unknown synthetic option {key!r} in {spec!r}; use n and seed.")
            options[key] = int(value)
        return generate_reports(options["n"], seed=options["seed"])
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --data_path to a TCGA-schema reports file.")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def describe_data(args: ScriptArguments) -> str:
    """The training data as model cards describe it."""
    if args.training_data:
        return args.training_data
    if args.data_path.startswith("synthetic"):
        return f"synthetic TCGA-style pathology reports (`reportkd.synthetic`, {args.data_path.partition(':')[2]})"
    return f"pathology reports from `{Path(args.data_path).name}` (report text → synoptic line), split by patient"


def load_split(args: ScriptArguments) -> tuple[list[dict], list[dict]]:
    """Train and held-out examples; the split is by patient (stable hash), so no patient is on both sides."""
    records = read_records(args.data_path)
    train, held_out = [], []
    for r in records:
        if not r.get("synoptic") or len(str(r.get("text") or "").split()) < args.min_words:
            continue
        key = str(r.get("patient") or r.get("id"))
        bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10_000
        (held_out if bucket < args.eval_fraction * 10_000 else train).append(r)
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    if args.max_eval_samples:
        held_out = held_out[: args.max_eval_samples]
    logger.info("%d training and %d held-out reports", len(train), len(held_out))
    return [make_example(r, args.prompt_words) for r in train], [make_example(r, args.prompt_words) for r in held_out]


# -- models --------------------------------------------------------------------------------------------------------
def build_tokenizer(model_args: ModelArguments, train: list[dict], out: Path, reuse: bool):
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
        args, mode="sft", output_dir=str(out), max_steps=steps, learning_rate=lr, teacher_model_name_or_path=None
    )
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


# -- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model, tok, prompts: list[str], max_prompt_length: int, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy completions, batched by prompt length, with the same KV-cached sampler as training."""
    from tqdm.auto import tqdm

    collator = PromptCompletionCollator(tok, max_prompt_length, max_new_tokens)
    encoded = [collator.encode({"prompt": p})[0] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="generating", leave=False):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), collator.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        out = interleaved_sample(
            model, None, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens, student_temperature=0.0,
            eos_token_id=tok.eos_token_id, pad_token_id=collator.pad_token_id,
        )  # fmt: skip
        for row, i in enumerate(idx):
            outputs[i] = tok.decode(
                out.completion_ids[row][out.completion_mask[row]], skip_special_tokens=True
            ).strip()
    return outputs


def score(name, model, tok, held_out, args: SKDConfig, script_args: ScriptArguments, extra=None, out=None) -> dict:
    """Greedy generations on the held-out reports, their metrics, and ``<out>/predictions/<name>.jsonl``."""
    start = time.perf_counter()
    preds = generate(
        model, tok, [ex["prompt"] for ex in held_out], args.max_prompt_length, args.max_completion_length,
        script_args.eval_batch_size,
    )  # fmt: skip
    refs = [ex["completion"].strip() for ex in held_out]
    metrics = evaluate_generations(preds, refs, fields=FIELDS)
    metrics["eval_seconds"] = round(time.perf_counter() - start, 1)
    metrics["examples"] = [{"prediction": p, "reference": r} for p, r in list(zip(preds, refs))[:3]]
    metrics.update(extra or {})
    # Per-report generations, for `reportkd evaluate generations --predictions <file>`.
    if out is not None and PartialState().is_main_process:
        path = Path(out) / "predictions" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for p, r in zip(preds, refs):
                f.write(json.dumps({"prediction": p, "reference": r}) + "\n")
    logger.info("%s: field accuracy %.3f, ROUGE-L %.3f", name, metrics["field_accuracy"], metrics["rougeL"])
    return metrics


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: field accuracies, ROUGE-L and BLEU per model."""
    cols = [f"accuracy_{f}" for f in FIELDS] + ["field_accuracy", "exact_match", "rougeL", "bleu"]
    head = ["model", *[c.replace("accuracy_", "") if c.startswith("accuracy_") else c for c in cols], "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        cells = [f"{m.get(c, float('nan')):.3f}" if c != "bleu" else f"{m.get(c, 0):.1f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m.get('train_seconds', 0):.0f} |")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------------------
def parse_mode(spec: str) -> tuple[str, dict[str, Any]]:
    """``"skd@top_k=5,seed=1"`` → ``("skd", {"top_k": 5, "seed": 1})`` (values parsed as YAML scalars)."""
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


def main(script_args: ScriptArguments, training_args: SKDConfig, model_args: ModelArguments) -> dict[str, dict]:
    """Runs the recipe; returns ``{model name: metrics}`` (also written to ``<output_dir>/results.json``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if script_args.num_threads:
        torch.set_num_threads(script_args.num_threads)
    specs = {spec: parse_mode(spec) for spec in script_args.modes}  # fails early on a typo
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reuse = script_args.reuse_checkpoints
    state = PartialState()
    train, held_out = load_split(script_args)
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
    teacher = teacher.to(training_args.device)
    teacher_name = training_args.teacher_model_name_or_path or (
        f"{model_args.teacher_config['model_type']} teacher built here, fine-tuned on the same reports "
        f"({script_args.teacher_steps} SFT steps)"
    )
    extra = {"train_seconds": teacher_seconds, "parameters": teacher.num_parameters()}
    results["teacher"] = score("teacher", teacher, tok, held_out, training_args, script_args, extra, out)

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
    state.wait_for_everyone()  # every process loads the saved warm start below
    student = student.to(training_args.device)
    warm_seconds = time.perf_counter() - start
    if reused:
        warm_seconds = results.get("student_init", {}).get("train_seconds", warm_seconds)
    extra = {"train_seconds": warm_seconds, "parameters": student.num_parameters()}
    results["student_init"] = score("student_init", student, tok, held_out, training_args, script_args, extra, out)

    # One student per mode, same start, same budget.
    from transformers import AutoModelForCausalLM

    peft_config = None
    if model_args.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            target_modules=list(model_args.lora_target_modules),
            task_type="CAUSAL_LM",
        )
    for spec, (mode, overrides) in specs.items():
        model = AutoModelForCausalLM.from_pretrained(out / "student_init")
        run_dir = out / re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
        # pushed once below, with the card and metrics (not at every save)
        args = dataclasses.replace(training_args, mode=mode, output_dir=str(run_dir), push_to_hub=False, **overrides)
        trainer = SKDTrainer(model=model, teacher_model=None if mode == "sft" else teacher, args=args,
                             train_dataset=_dataset(train), processing_class=tok, peft_config=peft_config)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        trainer.save_model(str(run_dir))
        logs = [log for log in trainer.state.log_history if "loss" in log]
        extra = {"train_seconds": seconds, "final_loss": logs[-1]["loss"] if logs else None}
        rates = [log["acceptance_rate"] for log in logs if "acceptance_rate" in log]
        if rates:
            extra["acceptance_rate_first"], extra["acceptance_rate_last"] = rates[0], rates[-1]
        speeds = [log["completion_tokens_per_second"] for log in logs]
        extra["completion_tokens_per_second"] = sum(speeds) / len(speeds) if speeds else None
        model = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
        results[spec] = score(spec, model, tok, held_out, args, script_args, extra, out)
        if state.is_main_process:
            (out / "results.json").write_text(json.dumps(results, indent=2))
            card_metrics = {k: v for k, v in results[spec].items() if k != "examples"}
            (run_dir / "eval_results.json").write_text(json.dumps(card_metrics, indent=2))
        repo_id = training_args.hub_model_id or f"ORG/{out.name}"
        repo_id = f"{repo_id}-{run_dir.name}" if len(specs) > 1 else repo_id
        card = dict(
            teachers=[] if mode == "sft" else [teacher_name], base_model=model_args.model_name_or_path,
            training_data=describe_data(script_args), eval_data=f"{len(held_out)} held-out reports (other patients)",
            command="python recipes/skd_report_generation.py " + " ".join(sys.argv[1:]),
        )  # fmt: skip
        trainer.create_model_card(repo_id=repo_id, **card)  # distillation.json + README.md (main process)
        if training_args.push_to_hub:  # private repository, or hub_local_dir
            trainer.push_to_hub(folder=run_dir, repo_id=repo_id, commit_message=f"Upload {spec} student")
    print(f"\nHeld-out reports: {len(held_out)}; greedy decoding; field accuracy = exact match per field.\n")
    print(format_table(results))
    return results


def make_parser() -> RecipeParser:
    """The recipe's parser: ``ScriptArguments``, ``SKDConfig``, ``ModelArguments`` (``--config x.yaml``)."""
    return RecipeParser((ScriptArguments, SKDConfig, ModelArguments))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
