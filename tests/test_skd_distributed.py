"""Two CPU processes under `accelerate launch` train the same SKD student as one process with the same global batch.

Per-row sampling seeds make every prompt's sample independent of how the batch is split, and the loss is divided
by the completion tokens of the whole step over all processes, so the two runs must agree. This file is also the
script that the processes run: ``python tests/test_skd_distributed.py OUT_FILE PER_DEVICE_BATCH``.
(`accelerate launch --cpu` starts one process; two CPU processes need `--multi_gpu` with `use_cpu=True`.)
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def main(out_file: str, per_device: int) -> None:
    from datasets import Dataset
    from safetensors.torch import save_file

    from reportkd.synthetic import generate_reports
    from reportkd.text.skd import SKDConfig, SKDTrainer
    from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer

    torch.set_num_threads(1)
    records = generate_reports(8, seed=0)
    rows = [{"prompt": r["text"][-120:] + "\nsynoptic:", "completion": " " + r["synoptic"][:40]} for r in records]
    tok = train_bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=300)
    config = {"model_type": "llama", "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    student = causal_lm_from_config({**config, "hidden_size": 32, "num_hidden_layers": 1}, tok, seed=1).double()
    teacher = causal_lm_from_config({**config, "hidden_size": 48, "num_hidden_layers": 2}, tok, seed=0).double()
    teacher.lm_head.weight.data[tok.eos_token_id] *= 3  # ragged completion lengths
    args = SKDConfig(
        output_dir=str(Path(out_file).parent / "ddp_out"), report_to="none", per_device_train_batch_size=per_device,
        max_steps=2, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0,
        save_strategy="no", seed=3, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, logging_steps=1,
        mode="skd", top_k=8, max_prompt_length=32, max_completion_length=24,
    )  # fmt: skip
    trainer = SKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)  # fmt: skip
    trainer.train()
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out_file)
        print(f"world_size={trainer.args.world_size} acceptance={trainer.state.log_history[0]['acceptance_rate']}")


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _capture(fn, *args):
    import contextlib
    import io

    buffer = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(buffer):
            fn(*args)
    finally:
        torch.set_num_threads(threads)
    return buffer.getvalue()


@pytest.mark.slow
def test_two_process_skd_run_matches_single_process(tmp_path):
    from safetensors.torch import load_file

    single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
    script = str(Path(__file__).resolve())
    one = _capture(main, str(single), 4)  # in this process: one interpreter start less
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    two = _run([*launch, script, str(multi), "2"], tmp_path)
    assert "world_size=2" in two and "world_size=1" in one
    assert one.split("acceptance=")[1].split()[0] == two.split("acceptance=")[1].split()[0]
    a, b = load_file(single), load_file(multi)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-7, atol=1e-9, msg=k)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
