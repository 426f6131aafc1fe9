"""Training-step speed: this trainer's ``on_policy`` and ``skd`` against TRL's ``GKDTrainer`` (λ = 1), fairly.

Arms (all on the same teacher and student, prompts, batch, completion budget, optimizer, learning rate and loss:
generalized JSD, β = 0.5, loss temperature 1; a step is the wall time between two optimizer updates, sampling
included; speed is completion tokens trained per second):

- ``trl_best``: TRL at its best settings: ``gradient_checkpointing=False`` (TRL's GKD generation then keeps its KV
  cache: ``use_cache = not gradient_checkpointing``), sampling T 1 / top-p 1 (TRL fixes top-p 1 and top-k 0).
- ``trl_defaults``: what a TRL user gets out of the box: ``gradient_checkpointing=True`` (so generation runs without
  KV cache and the backward recomputes activations) and sampling temperature 0.9.
- ``on_policy``: ours at the same sampling as ``trl_best`` (T 1 / top-p 1, GKD's defaults and ours for on_policy).
- ``on_policy_skd_sampling``: ours at the student sampling of ``skd`` (T 0.5 / top-p 0.5): the baseline of SKD's cost.
- ``skd``: ours, official recipe (top-K 25 over the teacher's filtered distribution, student T 0.5 / top-p 0.5,
  teacher T 0.2 / top-p 0.5); ``skd_raw``: top-K over raw teacher logits (more acceptance, fewer teacher calls).

What still differs between TRL and ours at equal settings is the implementation: our KV-cached sampling loop
instead of ``generate``, logits of the output layer only at completion positions (TRL computes the full
``B x L x V`` logits of student and teacher), and the prompt's logits skipped while sampling. Random models sample
different lengths at different temperatures, so compare tokens/s, not s/step. Arms run alternately, ``--rounds``
times each; the table shows medians (and the range).

    pip install "trl>=1.16"   # benchmark only (the ``bench`` extra)
    nice -n 10 python benchmarks/skd_speed.py                        # random tiny models
    nice -n 10 python benchmarks/skd_speed.py --teacher outputs/skd_report_cpu/teacher \\
        --student outputs/skd_report_cpu/student_init --tokenizer outputs/skd_report_cpu/tokenizer

Writes ``--out`` (JSON; refuses to overwrite without ``--overwrite``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]

TEACHER = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
           "max_position_embeddings": 512}  # fmt: skip
STUDENT = {**TEACHER, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2}  # the CPU recipe's sizes


class StepTimer(TrainerCallback):
    """Wall time between optimizer updates (sampling included)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def counting(cls):
    """Subclass of a trainer that records the completion tokens each optimizer step trains on."""

    class Counting(cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.tokens_per_step.setdefault(self.state.global_step, 0)
            self.tokens_per_step[self.state.global_step] += int((inputs["labels"] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    Counting.__name__ = f"Counting{cls.__name__}"
    return Counting


def load_rows(n: int, prompt_words: int) -> tuple[list[dict], str]:
    from reportkd.text.skd.recipe import ScriptArguments
    from reportkd.text.skd.report_task import DEFAULT_DATA, load_split

    if DEFAULT_DATA.exists():
        train, _ = load_split(ScriptArguments(max_train_samples=n, max_eval_samples=1, prompt_words=prompt_words))
        return train, "TCGA reports"
    from reportkd.synthetic import generate_reports
    from reportkd.text.skd.report_task import make_example

    return [make_example(r, prompt_words) for r in generate_reports(n, seed=0)], "synthetic reports"


def build(args, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer

    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tok = train_bpe_tokenizer((r["prompt"] + r["completion"] for r in rows), 4096)
    if args.teacher:
        teacher = AutoModelForCausalLM.from_pretrained(args.teacher)
        student = AutoModelForCausalLM.from_pretrained(args.student)
    else:
        teacher = causal_lm_from_config(TEACHER, tok, seed=0)
        student = causal_lm_from_config(STUDENT, tok, seed=1)
    return tok, teacher.to(args.device), student.to(args.device)


def common_args(args, out_dir: str) -> dict:
    return dict(
        output_dir=out_dir, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
        learning_rate=1e-5, lr_scheduler_type="constant", logging_steps=10_000, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=args.device == "cpu", seed=0, dataloader_num_workers=0, beta=0.5, temperature=1.0,
        bf16=args.device == "cuda", disable_dropout=True, remove_unused_columns=False,
    )  # fmt: skip


OUR_ARMS = {
    "on_policy": ("on_policy", {"student_temperature": 1.0, "student_top_p": 1.0}),
    "on_policy_skd_sampling": ("on_policy", {"student_temperature": 0.5, "student_top_p": 0.5}),
    "skd": ("skd", {"acceptance": "filtered_top_k"}),
    "skd_raw": ("skd", {"acceptance": "raw_top_k"}),
}
TRL_ARMS = ("trl_best", "trl_defaults")


def run_ours(method: str, args, tok, teacher, student, dataset, out_dir: str) -> dict:
    from reportkd.text.skd import SKDConfig, SKDTrainer

    mode, settings = OUR_ARMS[method]
    config = SKDConfig(
        **common_args(args, out_dir), mode=mode, lmbda=1.0, loss="generalized_jsd",
        max_prompt_length=args.max_prompt_length, max_completion_length=args.max_new_tokens, **settings,
    )  # fmt: skip
    trainer = counting(SKDTrainer)(model=copy.deepcopy(student), teacher_model=teacher, args=config,
                                   train_dataset=dataset, processing_class=tok)  # fmt: skip
    return measure(trainer, args)


def trl_config_kwargs(args, out_dir: str, defaults: bool = False) -> dict:
    """``GKDConfig`` arguments of a TRL arm: its best settings, or (``defaults``) TRL's own defaults for every
    setting that changes cost or sampling (gradient checkpointing on, which also turns the generation KV cache off;
    temperature 0.9).

    Args:
        args: The benchmark's parsed arguments.
        out_dir: Scratch output folder.
        defaults: Leave gradient checkpointing and temperature at TRL's defaults.
    """
    kwargs = dict(
        **common_args(args, out_dir), lmbda=1.0, max_new_tokens=args.max_new_tokens,
        max_length=args.max_prompt_length + args.max_new_tokens,
    )  # fmt: skip
    if defaults:
        del kwargs["temperature"]  # TRL's GKD samples at its default 0.9 (its loss runs at temperature 1 either way)
    else:
        kwargs.update(gradient_checkpointing=False, temperature=1.0)  # KV cache on; sampling as on_policy
    return kwargs


def run_trl(method: str, args, tok, teacher, student, dataset, out_dir: str) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:
        return {"error": 'TRL is not installed: pip install "trl>=1.16" (benchmark-only dependency).'}
    from reportkd.text.skd import PromptCompletionCollator

    collator = PromptCompletionCollator(tok, args.max_prompt_length, args.max_new_tokens)

    def trl_collator(rows):
        batch = collator(rows)
        batch["prompts"] = batch.pop("prompt_input_ids")
        return batch

    config = GKDConfig(**trl_config_kwargs(args, out_dir, defaults=method == "trl_defaults"))
    trainer = counting(GKDTrainer)(
        model=copy.deepcopy(student),
        teacher_model=teacher,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        data_collator=trl_collator,
    )
    result = measure(trainer, args)
    result.update(gradient_checkpointing=config.gradient_checkpointing,
                  generation_use_cache=trainer.generation_config.use_cache,
                  sampling_temperature=config.temperature)  # fmt: skip
    return result


def measure(trainer, args) -> dict:
    trainer.tokens_per_step = {}
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    durations = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])][args.warmup :]
    tokens = [trainer.tokens_per_step.get(step, 0) for step in range(args.warmup, args.warmup + args.steps)]
    result = {
        "tokens_per_second": sum(tokens) / sum(durations),
        "seconds_per_step": statistics.median(durations),
        "mean_completion_length": sum(tokens) / (args.batch * args.steps),
    }
    logs = [log for log in trainer.state.log_history if "acceptance_rate" in log]
    if getattr(trainer, "_metrics", None) and trainer._metrics.get("proposed"):
        result["acceptance_rate"] = trainer._metrics["accepted"] / trainer._metrics["proposed"]
    elif logs:
        result["acceptance_rate"] = logs[-1]["acceptance_rate"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="Teacher checkpoint (default: random model of the CPU recipe's size).")
    parser.add_argument("--student", help="Student checkpoint (with --teacher).")
    parser.add_argument("--tokenizer", help="Tokenizer (default: BPE trained on the prompts).")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-prompt-length", type=int, default=192)
    parser.add_argument("--prompt-words", type=int, default=120)
    parser.add_argument("--steps", type=int, default=4, help="Measured steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured first steps.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each arm (alternated; medians reported).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--methods", nargs="+", default=[*TRL_ARMS, *OUR_ARMS], choices=[*TRL_ARMS, *OUR_ARMS])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "skd_speed.json"))
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    args = parser.parse_args(argv)
    if bool(args.teacher) != bool(args.student):
        parser.error("give both --teacher and --student, or neither")
    if Path(args.out).exists() and not args.overwrite:
        parser.error(f"{args.out} exists: pass --overwrite to replace it, or another --out")
    torch.set_num_threads(args.threads)
    from datasets import Dataset

    rows, source = load_rows(args.batch * (args.warmup + args.steps), args.prompt_words)
    tok, teacher, student = build(args, rows)
    dataset = Dataset.from_list(rows)
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    scratch = str(ROOT / "outputs" / "skd_speed_tmp")
    for round_ in range(args.rounds):
        order = args.methods if round_ % 2 == 0 else args.methods[::-1]  # alternate arms, reverse every other round
        for method in order:
            run = run_trl if method in TRL_ARMS else run_ours
            runs[method].append(run(method, args, tok, teacher, student, dataset, scratch))
            print(f"round {round_ + 1}/{args.rounds}", method, runs[method][-1], flush=True)
    medians = {m: summarize(r) for m, r in runs.items()}
    setup = {
        "device": args.device, "threads": args.threads, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "max_prompt_length": args.max_prompt_length, "prompts": source, "steps": args.steps, "rounds": args.rounds,
        "teacher": args.teacher or f"random {TEACHER}", "student": args.student or f"random {STUDENT}",
        "teacher_parameters": teacher.num_parameters(), "student_parameters": student.num_parameters(),
        "torch": torch.__version__, "trl": _version("trl"), "transformers": _version("transformers"),
        "command": "python benchmarks/skd_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    result = {"setup": setup, "median": medians, "runs": runs}
    write_json(args.out, result)
    print(format_table(medians))
    return result


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` atomically (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, target)


def summarize(runs: list[dict]) -> dict:
    """Median tokens/s, s/step and completion length of an arm's runs, with the tokens/s range."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    tps = [r["tokens_per_second"] for r in ok]
    out = {
        "tokens_per_second": statistics.median(tps), "tokens_per_second_min": min(tps),
        "tokens_per_second_max": max(tps), "seconds_per_step": statistics.median(r["seconds_per_step"] for r in ok),
        "mean_completion_length": statistics.median(r["mean_completion_length"] for r in ok), "runs": len(ok),
    }  # fmt: skip
    if any("acceptance_rate" in r for r in ok):
        out["acceptance_rate"] = statistics.median(r["acceptance_rate"] for r in ok if "acceptance_rate" in r)
    return out


def format_table(medians: dict[str, dict]) -> str:
    def tps(name):
        return medians.get(name, {}).get("tokens_per_second")

    head = "| arm | tokens/s (median) | range | s/step | mean completion | acceptance | vs TRL best | vs TRL defaults "
    lines = [head + "| cost vs on_policy at equal sampling |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in medians.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | | | |")
            continue
        t = r["tokens_per_second"]
        acc = f"{r['acceptance_rate']:.3f}" if "acceptance_rate" in r else "-"
        best, dflt = tps("trl_best"), tps("trl_defaults")
        base = tps("on_policy_skd_sampling") if name.startswith("skd") else None
        cost = f"{base / t:.2f}x" if base else "-"
        lines.append(
            f"| {name} | {t:.0f} | {r['tokens_per_second_min']:.0f}–{r['tokens_per_second_max']:.0f} "
            f"| {r['seconds_per_step']:.2f} | {r['mean_completion_length']:.1f} | {acc} "
            f"| {f'{t / best:.2f}x' if best else '-'} | {f'{t / dflt:.2f}x' if dflt else '-'} | {cost} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
