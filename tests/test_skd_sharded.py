"""A teacher (and student) sharded across two CPU processes (FSDP2 over gloo) samples and trains without hanging and
gives what one process with whole models gives.

Every forward of a sharded model is a collective, so the two processes must run the same number of forwards even
when their prompts, budgets and acceptance differ. The workers check, per process, that the sharded run equals the
unsharded one and that both processes ran the same forwards, while the same calls without ``synced`` would not have
(so the setup does exercise the hazard). This file is also the workers' script:
``python tests/test_skd_sharded.py sampler OUT_DIR`` under torchrun, ``... trainer OUT_DIR PER_DEVICE`` under
``accelerate launch`` (or in one process).
"""

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TIMEOUT = 240  # seconds for a whole two-process run; a hang (unequal collectives) fails the test instead of CI

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with the gloo backend (two CPU processes)",
)


def _models(seed_offset: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = {"vocab_size": 40, "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
            "eos_token_id": 1, "pad_token_id": 0, "tie_word_embeddings": False}  # fmt: skip
    torch.manual_seed(0 + seed_offset)
    teacher = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, **base)).double().eval()
    torch.manual_seed(1 + seed_offset)
    student = LlamaForCausalLM(LlamaConfig(hidden_size=16, num_hidden_layers=2, **base)).double().eval()
    teacher.lm_head.weight.data[1] *= 4  # ragged completion lengths (EOS likelier)
    return student.requires_grad_(False), teacher.requires_grad_(False)


def _gather(value: int) -> list[int]:
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def sampler_worker(out_dir: str) -> None:
    """Each process: its own prompts (rank-dependent lengths and budgets), every sampler mode, sharded vs whole."""
    import torch.distributed as dist

    from reportkd.text.skd import draw_noise, interleaved_sample
    from reportkd.text.skd.sharding import is_sharded, shard_frozen_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    student, teacher = _models()
    g = torch.Generator().manual_seed(10 + rank)
    rows, length = (2, 5) if rank == 0 else (3, 11)  # different batch, prompt length and budget per process
    budget = 4 if rank == 0 else 18
    ids = torch.randint(2, 40, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding
    noise = draw_noise(rows, budget, g)
    cases = {  # name: (student, teacher, shard student, extra arguments)
        "skd": (student, teacher, False, {"top_k": 3, "num_draft_tokens": 4}),
        "skd_sharded_student": (student, teacher, True, {"top_k": 3, "num_draft_tokens": 4}),
        "skd_raw_top_k": (student, teacher, True, {"top_k": 20, "acceptance": "raw_top_k", "num_draft_tokens": 6}),
        "on_policy": (student, None, True, {}),
        "seq_kd": (None, teacher, False, {}),
    }
    report = {}
    for name, (s, t, shard_student, extra) in cases.items():
        kwargs = dict(max_new_tokens=budget, eos_token_id=1, pad_token_id=0, noise=noise, **extra)
        ref = interleaved_sample(s, t, ids, mask, **kwargs)  # whole models, no synchronisation
        s_sh = shard_frozen_model(copy.deepcopy(s), "cpu") if s is not None and shard_student else s
        t_sh = shard_frozen_model(copy.deepcopy(t), "cpu") if t is not None else None
        assert (t_sh is None or is_sharded(t_sh)) and (not shard_student or is_sharded(s_sh))
        out = interleaved_sample(s_sh, t_sh, ids, mask, synced=True, **kwargs)
        assert torch.equal(out.completion_ids, ref.completion_ids), name
        assert torch.equal(out.completion_mask, ref.completion_mask), name
        assert torch.equal(out.from_teacher, ref.from_teacher), name
        assert (out.num_proposed, out.num_accepted) == (ref.num_proposed, ref.num_accepted), name
        if ref.teacher_logits is not None:
            torch.testing.assert_close(out.teacher_logits, ref.teacher_logits, rtol=1e-9, atol=1e-9, msg=name)
        for whole_model, part in ((t, t_sh), (s, s_sh if shard_student else None)):
            if part is not None:  # each process holds half of every weight after sampling (the root unit included)
                held = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in part.parameters())
                assert 2 * held == sum(p.numel() for p in whole_model.parameters()), name
        sharded_calls = [c for c, sh in ((out.teacher_forwards, t_sh is not None), (out.student_forwards,
                         shard_student)) if sh]  # fmt: skip
        for calls in sharded_calls:  # every sharded model ran the same forwards on both processes
            assert len(set(_gather(calls))) == 1, (name, _gather(calls))
        whole = ref.teacher_forwards if t is not None else ref.student_forwards
        report[name] = {"unsynced_forwards": _gather(whole), "lengths": ref.completion_mask.sum(-1).tolist()}
    if rank == 0:
        Path(out_dir, "sampler.json").write_text(json.dumps(report))
    dist.destroy_process_group()
    print(f"rank {rank} ok")


# lmbda 0.03 with seed 3: the first step trains on the dataset, the second on samples (the draws are 0.047, 0.013).
# "replicated": plain data parallelism (whole teacher in every process) must match one process as well.
MODES = (("skd", {}), ("seq_kd", {"seq_kd_loss": "distillation"}), ("on_policy", {"lmbda": 0.03}),
         ("supervised_kd", {}), ("mixed", {"lmbda": 0.03, "reuse_teacher_logits": False}),
         ("replicated", {"mode": "skd", "shard_teacher": False}))  # fmt: skip


def trainer_worker(out_dir: str, per_device: int) -> None:
    """Trains one student per entry of ``MODES`` (2 steps); with two processes the teacher is sharded (but in
    ``replicated``)."""
    from datasets import Dataset
    from safetensors.torch import save_file

    from reportkd.synthetic import generate_reports
    from reportkd.text.skd import SKDConfig, SKDTrainer
    from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer
    from reportkd.text.skd.sharding import is_sharded

    torch.set_num_threads(1)
    records = generate_reports(8, seed=0)
    rows = [{"prompt": r["text"][-30 - 15 * i :] + "\nsynoptic:", "completion": " " + r["synoptic"][:40]}
            for i, r in enumerate(records)]  # fmt: skip
    tok = train_bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=300)
    config = {"model_type": "llama", "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    results = {}
    for mode, extra in MODES:
        student = causal_lm_from_config({**config, "hidden_size": 32, "num_hidden_layers": 1}, tok, seed=1).double()
        teacher = causal_lm_from_config({**config, "hidden_size": 48, "num_hidden_layers": 2}, tok, seed=0).double()
        teacher.lm_head.weight.data[tok.eos_token_id] *= 3  # ragged completion lengths
        args = SKDConfig(
            output_dir=str(Path(out_dir) / f"run_{per_device}"), report_to="none", max_steps=2,
            per_device_train_batch_size=per_device, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
            weight_decay=0.0, save_strategy="no", seed=3, disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
            logging_steps=1, top_k=8, max_prompt_length=40, max_completion_length=16,
            **{"mode": mode, "shard_teacher": True, **extra},
        )  # fmt: skip
        trainer = SKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok)  # fmt: skip
        assert is_sharded(trainer.teacher) == (args.world_size > 1 and args.shard_teacher), mode
        trainer.train()
        if trainer.accelerator.is_main_process:
            model = trainer.accelerator.unwrap_model(trainer.model)
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(Path(out_dir) / f"{mode}_{args.world_size}.safetensors"))  # fmt: skip
            results[mode] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    if results:
        Path(out_dir, f"losses_{args.world_size}.json").write_text(json.dumps(results))
    print(f"world_size={args.world_size} ok")


def _run(cmd: list[str], cwd: Path) -> str:
    """Runs ``cmd`` in its own process group; kills the whole group (workers included) after ``TIMEOUT``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"two-process run did not finish in {TIMEOUT} s (hang?):\n{out[-3000:]}")
    assert proc.returncode == 0, out[-5000:]
    return out


def test_shard_teacher_is_validated_and_needs_processes(tmp_path):
    from test_skd_trainer import make_args

    from reportkd.text.skd.sharding import shard_frozen_model

    with pytest.raises(ValueError, match="drop device_map"):
        make_args(tmp_path, shard_teacher=True, teacher_model_init_kwargs={"device_map": "auto"})
    assert make_args(tmp_path, shard_teacher=True).shard_teacher
    if not torch.distributed.is_initialized():
        with pytest.raises(RuntimeError, match="accelerate launch"):
            shard_frozen_model(_models()[1], "cpu")


def test_one_process_keeps_the_teacher_whole_and_synced_sampling_changes_nothing(tmp_path):
    from datasets import Dataset
    from test_skd_trainer import make_args

    from reportkd.text.skd import SKDTrainer, interleaved_sample, is_sharded
    from reportkd.text.skd.models import causal_lm_from_config, train_bpe_tokenizer

    student, teacher = _models()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 40, (3, 6), generator=g)
    kwargs = dict(max_new_tokens=10, top_k=3, eos_token_id=1, noise=(torch.rand(3, 10, generator=g),) * 2)
    a = interleaved_sample(student, teacher, ids, **kwargs)
    b = interleaved_sample(student, teacher, ids, **kwargs, synced=True)  # no process group: a no-op
    assert torch.equal(a.completion_ids, b.completion_ids) and a.teacher_forwards == b.teacher_forwards
    rows = [{"prompt": "grade 2 tumour", "completion": " grade 2"}] * 4
    tok = train_bpe_tokenizer([r["prompt"] + r["completion"] for r in rows], vocab_size=280)
    config = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    trainer = SKDTrainer(
        model=causal_lm_from_config(config, tok, seed=1), teacher_model=causal_lm_from_config(config, tok, seed=0),
        args=make_args(tmp_path, shard_teacher=True), train_dataset=Dataset.from_list(rows), processing_class=tok,
    )  # fmt: skip
    assert not is_sharded(trainer.teacher) and not trainer._synced()


@pytest.mark.slow
def test_sharded_sampler_stays_in_step_and_matches_whole_models(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = _run([*torchrun, str(Path(__file__).resolve()), "sampler", str(tmp_path)], tmp_path)
    assert "rank 0 ok" in out and "rank 1 ok" in out
    report = json.loads((tmp_path / "sampler.json").read_text())
    assert set(report) == {"skd", "skd_sharded_student", "skd_raw_top_k", "on_policy", "seq_kd"}
    for name, case in report.items():
        # Unsynced, the processes would have run different numbers of forwards: the setup exercises the hazard.
        assert len(set(case["unsynced_forwards"])) == 2, (name, case)


@pytest.mark.slow
def test_sharded_teacher_training_matches_one_process(tmp_path):
    from safetensors.torch import load_file

    config = Path(__file__).resolve().parents[1] / "recipes" / "accelerate" / "skd_sharded_teacher.yaml"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]  # the shipped config, sized for two CPU processes
    script = str(Path(__file__).resolve())
    two = _run([*launch, script, "trainer", str(tmp_path), "2"], tmp_path)
    trainer_worker(str(tmp_path), 4)  # one process, whole teacher, the same global batch (in this interpreter)
    assert "world_size=2 ok" in two
    losses_1 = json.loads((tmp_path / "losses_1.json").read_text())
    losses_2 = json.loads((tmp_path / "losses_2.json").read_text())
    assert losses_1["on_policy"][0] == pytest.approx(losses_1["supervised_kd"][0], rel=1e-9)  # step 1: dataset
    assert losses_1["on_policy"][1] != pytest.approx(losses_1["supervised_kd"][1], rel=1e-3)  # step 2: samples
    for mode, _ in MODES:
        assert losses_1[mode] == pytest.approx(losses_2[mode], rel=1e-6), mode
        a = load_file(tmp_path / f"{mode}_1.safetensors")
        b = load_file(tmp_path / f"{mode}_2.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-7, atol=1e-9, msg=f"{mode}: {k}")


if __name__ == "__main__":
    if sys.argv[1] == "sampler":
        sampler_worker(sys.argv[2])
    else:
        trainer_worker(sys.argv[2], int(sys.argv[3]))
