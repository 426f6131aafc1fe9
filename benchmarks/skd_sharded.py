"""Sampling with a teacher sharded across processes (FSDP2) against a replicated teacher, on CPU processes (gloo).

Every process samples its own prompts (rows strided over the processes) with the official SKD settings
(``interleaved_sample`` defaults) in two modes, ``skd`` (student drafts, teacher verifies) and ``seq_kd`` (teacher
alone). Arms, alternated per batch (reversed every other batch):

- ``replicated``: the whole teacher in every process, no synchronisation (data parallelism as before; the anchor);
- ``replicated_synced``: the same with ``synced=True``: the cost of keeping processes in step (padding rounds for the
  process that finished first, one all-reduce per round) without any sharding;
- ``sharded``: the teacher sharded with :func:`~reportkd.text.skd.sharding.shard_frozen_model`, ``synced=True``.

Reported per arm: the median over batches of the slowest process's seconds (the step waits for it), teacher
forwards per process, the teacher's parameter bytes per process, and whether the samples equal the replicated
arm's (they must). On CPU the all-gathers are memory copies between processes, so the time ratio says little about
GPUs with NVLink; the memory and the forward counts carry over.

    nice -n 10 python benchmarks/skd_sharded.py --teacher outputs/skd_far/teacher \\
        --student outputs/skd_far/student_init --tokenizer outputs/skd_far/tokenizer

Starts ``--processes`` workers itself (torch.distributed.run). Writes ``--out`` (JSON; refuses to overwrite without
``--overwrite``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("replicated", "replicated_synced", "sharded")
MODES = ("skd", "seq_kd")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="Teacher causal LM folder (safetensors).")
    parser.add_argument("--student", required=True, help="Student causal LM folder.")
    parser.add_argument("--tokenizer", required=True, help="Tokenizer folder.")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="Prompts per process and batch.")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-prompt-length", type=int, default=96)
    parser.add_argument("--prompt-words", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "skd_sharded_cpu.json"))
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")
    parser.add_argument("--result-file", help=argparse.SUPPRESS)  # internal: where rank 0 writes its JSON
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite and args.result_file is None:
        parser.error(f"{args.out} exists: pass --overwrite to replace it, or another --out")
    return args


def teacher_bytes(model: torch.nn.Module) -> int:
    """Parameter bytes this process holds (its shards for a sharded model)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reportkd.text.skd import PromptCompletionCollator, draw_noise, interleaved_sample
    from reportkd.text.skd.recipe import ScriptArguments
    from reportkd.text.skd.report_task import load_split
    from reportkd.text.skd.sharding import shard_frozen_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    teacher = AutoModelForCausalLM.from_pretrained(args.teacher).eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(args.student).eval().requires_grad_(False)
    sharded = shard_frozen_model(AutoModelForCausalLM.from_pretrained(args.teacher).eval(), "cpu")  # a 2nd copy
    n = args.batch * args.batches * world
    rows, _ = load_split(ScriptArguments(max_train_samples=n, max_eval_samples=1, prompt_words=args.prompt_words))
    mine = rows[rank::world]
    collator = PromptCompletionCollator(tok, args.max_prompt_length, args.max_new_tokens)
    records: list[dict] = []
    for b in range(args.batches):
        batch = collator(mine[b * args.batch : (b + 1) * args.batch])
        ids, mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        seeds = [rank * 1_000_000 + b * 1_000 + i for i in range(ids.shape[0])]
        noise = draw_noise(ids.shape[0], args.max_new_tokens, seeds=seeds)
        for mode in MODES:
            reference = None
            for arm in ARMS if b % 2 == 0 else ARMS[::-1]:
                model = sharded if arm == "sharded" else teacher
                dist.barrier()
                start = time.perf_counter()
                out = interleaved_sample(
                    student if mode == "skd" else None, model, ids, mask, max_new_tokens=args.max_new_tokens,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, noise=noise,
                    vocab_size=len(tok), synced=arm != "replicated",
                )  # fmt: skip
                seconds = time.perf_counter() - start
                key = (out.completion_ids.tolist(), out.completion_mask.tolist())
                reference = key if arm == "replicated" else reference
                records.append({"batch": b, "mode": mode, "arm": arm, "seconds": seconds,
                                "teacher_forwards": out.teacher_forwards, "tokens": int(out.completion_mask.sum()),
                                "key": key})  # fmt: skip
            for r in records[-len(ARMS) :]:  # every arm's samples against the replicated arm's
                r["same_samples"] = r.pop("key") == reference if reference is not None else None
    gathered: list = [None] * world
    dist.all_gather_object(gathered, records)
    memory = [None] * world
    dist.all_gather_object(memory, {"replicated": teacher_bytes(teacher), "sharded": teacher_bytes(sharded)})
    if rank == 0:
        Path(args.result_file).write_text(json.dumps({"records": gathered, "memory": memory}))
    dist.destroy_process_group()


def summarize(records: list[list[dict]], memory: list[dict]) -> dict:
    """Per mode and arm: median over batches of the slowest process, forwards and tokens per process."""
    out: dict = {}
    for mode in MODES:
        out[mode] = {}
        for arm in ARMS:
            per_rank = [[r for r in recs if r["mode"] == mode and r["arm"] == arm] for recs in records]
            slowest = [max(rs[b]["seconds"] for rs in per_rank) for b in range(len(per_rank[0]))]
            out[mode][arm] = {
                "seconds_median": round(statistics.median(slowest), 3),
                "seconds_range": [round(min(slowest), 3), round(max(slowest), 3)],
                "teacher_forwards_per_process": [sum(r["teacher_forwards"] for r in rs) for rs in per_rank],
                "tokens_per_process": [sum(r["tokens"] for r in rs) for rs in per_rank],
                "same_samples_as_replicated": all(r["same_samples"] for rs in per_rank for r in rs),
                "teacher_bytes_per_process": [m["sharded" if arm == "sharded" else "replicated"] for m in memory],
            }
    return out


def format_table(summary: dict) -> str:
    lines = ["| mode | arm | s / batch (median, slowest process) | vs replicated | teacher forwards per process | "
             "teacher MB per process | same samples |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, arms in summary.items():
        base = arms["replicated"]["seconds_median"]
        for arm, m in arms.items():
            mb = "/".join(f"{b / 2**20:.2f}" for b in m["teacher_bytes_per_process"])
            fwd = "/".join(str(f) for f in m["teacher_forwards_per_process"])
            lines.append(f"| {mode} | {arm} | {m['seconds_median']:.3f} | {m['seconds_median'] / base:.2f}x | {fwd} | "
                         f"{mb} | {m['same_samples_as_replicated']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.result_file is not None:  # a worker started below
        worker(args)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        result_file = str(Path(tmp) / "result.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.processes),
               __file__, *(argv if argv is not None else sys.argv[1:]), "--result-file", result_file]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        raw = json.loads(Path(result_file).read_text())
    summary = summarize(raw["records"], raw["memory"])
    from reportkd.utils import write_json

    result = {
        "benchmark": "skd_sharded", "device": "cpu (gloo)", "processes": args.processes, "batch": args.batch,
        "batches": args.batches, "max_new_tokens": args.max_new_tokens, "max_prompt_length": args.max_prompt_length,
        "teacher": args.teacher, "student": args.student, "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - start, 1), "summary": summary,
        "command": "python benchmarks/skd_sharded.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    write_json(args.out, result)
    print(format_table(summary))
    print(json.dumps({k: v for k, v in result.items() if k != "summary"}))
    return result


if __name__ == "__main__":
    main()
