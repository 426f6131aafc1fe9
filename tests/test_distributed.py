"""Two CPU processes under `accelerate launch` give the same student as one process with the same global batch.

`accelerate launch --cpu` always starts a single process; several CPU processes come from
`accelerate launch --multi_gpu --num_processes 2` (torchrun + gloo) with `use_cpu=True` in the training arguments.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "ddp_distill.py"


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_two_process_cpu_run_matches_single_process(tmp_path):
    single, multi = tmp_path / "single.safetensors", tmp_path / "multi.safetensors"
    _run([sys.executable, str(SCRIPT), str(single), "8", "1"], tmp_path)
    out = _run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(SCRIPT),
            str(multi),
            "2",
            "2",
        ],
        tmp_path,
    )
    assert "world_size=2" in out
    a, b = load_file(single), load_file(multi)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
