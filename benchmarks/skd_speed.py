"""Training-step speed: this trainer's ``on_policy`` and ``skd`` against TRL's ``GKDTrainer`` (λ = 1).

Identical teacher and student, batch, prompts, completion budget, optimizer and loss (generalized JSD, β = 0.5,
temperature 1): only the trainer differs. A step is the wall time between two optimizer updates, sampling
included; speed is completion tokens trained per second. ``on_policy`` samples like TRL (T 1, top-p 1); ``skd``
uses the paper's sampling (top-K 25, student T 0.5 / top-p 0.5, teacher T 0.2 / top-p 0.5) and
``on_policy_paper`` is on-policy with the same student sampling as ``skd`` (the fair SKD-cost baseline).

    pip install trl   # benchmark only
    python benchmarks/skd_speed.py                                   # random tiny models
    python benchmarks/skd_speed.py --teacher outputs/skd_report_cpu/teacher \\
        --student outputs/skd_report_cpu/student_init --tokenizer outputs/skd_report_cpu/tokenizer

Writes ``--out`` (JSON) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
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


def run_ours(mode: str, args, tok, teacher, student, dataset, out_dir: str) -> dict:
    from reportkd.text.skd import SKDConfig, SKDTrainer

    # on_policy samples like TRL (T 1, top-p 1); on_policy_paper and skd use the paper's sampling (T 0.5, top-p 0.5).
    sampling = {"student_temperature": 1.0, "student_top_p": 1.0} if mode == "on_policy" else {}
    mode = "on_policy" if mode == "on_policy_paper" else mode
    config = SKDConfig(
        **common_args(args, out_dir), mode=mode, lmbda=1.0, loss="generalized_jsd",
        max_prompt_length=args.max_prompt_length, max_completion_length=args.max_new_tokens, **sampling,
    )  # fmt: skip
    trainer = counting(SKDTrainer)(model=copy.deepcopy(student), teacher_model=teacher, args=config,
                                   train_dataset=dataset, processing_class=tok)  # fmt: skip
    return measure(trainer, args)


def run_trl(args, tok, teacher, student, dataset, out_dir: str) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError:
        return {"error": "TRL is not installed: pip install trl (benchmark-only dependency)."}
    from reportkd.text.skd import PromptCompletionCollator

    collator = PromptCompletionCollator(tok, args.max_prompt_length, args.max_new_tokens)

    def trl_collator(rows):
        batch = collator(rows)
        batch["prompts"] = batch.pop("prompt_input_ids")
        return batch

    config = GKDConfig(**common_args(args, out_dir), lmbda=1.0, max_new_tokens=args.max_new_tokens,
                       max_length=args.max_prompt_length + args.max_new_tokens)  # fmt: skip
    trainer = counting(GKDTrainer)(
        model=copy.deepcopy(student),
        teacher_model=teacher,
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        data_collator=trl_collator,
    )
    return measure(trainer, args)


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
    parser.add_argument("--steps", type=int, default=6, help="Measured steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured first steps.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each method (interleaved; best is kept).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--methods", nargs="+", default=["trl_gkd", "on_policy", "on_policy_paper", "skd"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "skd_speed.json"))
    args = parser.parse_args(argv)
    if bool(args.teacher) != bool(args.student):
        parser.error("give both --teacher and --student, or neither")
    torch.set_num_threads(args.threads)
    from datasets import Dataset

    rows, source = load_rows(args.batch * (args.warmup + args.steps), args.prompt_words)
    tok, teacher, student = build(args, rows)
    dataset = Dataset.from_list(rows)
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    scratch = str(ROOT / "outputs" / "skd_speed_tmp")
    for _ in range(args.rounds):
        for method in args.methods:
            if method == "trl_gkd":
                runs[method].append(run_trl(args, tok, teacher, student, dataset, scratch))
            else:
                runs[method].append(run_ours(method, args, tok, teacher, student, dataset, scratch))
            print(method, runs[method][-1], flush=True)
    best = {m: max(r, key=lambda x: x.get("tokens_per_second", 0)) for m, r in runs.items()}
    setup = {
        "device": args.device, "threads": args.threads, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "max_prompt_length": args.max_prompt_length, "prompts": source, "steps": args.steps, "rounds": args.rounds,
        "teacher": args.teacher or f"random {TEACHER}", "student": args.student or f"random {STUDENT}",
        "teacher_parameters": teacher.num_parameters(), "student_parameters": student.num_parameters(),
        "torch": torch.__version__,
    }  # fmt: skip
    result = {"setup": setup, "best": best, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(format_table(best))
    return result


def format_table(best: dict[str, dict]) -> str:
    base = best.get("trl_gkd", {}).get("tokens_per_second")
    ours = best.get("on_policy_paper", best.get("on_policy", {})).get("tokens_per_second")
    lines = ["| method | tokens/s | s/step | mean completion | acceptance | vs TRL GKD | SKD cost vs on-policy |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in best.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | |")
            continue
        tps = r["tokens_per_second"]
        acc = f"{r['acceptance_rate']:.3f}" if "acceptance_rate" in r else "-"
        vs_trl = f"{tps / base:.2f}x" if base else "-"
        cost = f"{ours / tps:.2f}x cost" if ours and name == "skd" else "-"
        lines.append(f"| {name} | {tps:.1f} | {r['seconds_per_step']:.2f} | {r['mean_completion_length']:.1f} | {acc} "
                     f"| {vs_trl} | {cost} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
