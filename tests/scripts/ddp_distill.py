"""Trains the tiny multitask student with stored teacher outputs; run alone or under `accelerate launch`.

Usage: python ddp_distill.py OUT_FILE PER_DEVICE_BATCH GRAD_ACCUM
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import TinyMultitaskConfig, TinyMultitaskModel, tiny_dataset  # noqa: E402

from reportkd.data import ReportCollator  # noqa: E402
from reportkd.text.mtcnn import MtCNNDistillationConfig, MtCNNDistillationTrainer  # noqa: E402


def main(out_file: str, per_device: int, accum: int) -> None:
    torch.manual_seed(0)
    teacher = TinyMultitaskModel(TinyMultitaskConfig())
    torch.manual_seed(1)
    student = TinyMultitaskModel(TinyMultitaskConfig())
    data = tiny_dataset(32, teacher=teacher)
    args = MtCNNDistillationConfig(
        output_dir=str(Path(out_file).parent / "ddp_out"),
        report_to="none",
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_steps=3,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        save_strategy="no",
        seed=3,
        disable_tqdm=True,
        use_cpu=True,
        alpha=0.6,
        temperature=2.0,
        dataloader_num_workers=0,
    )
    trainer = MtCNNDistillationTrainer(model=student, args=args, train_dataset=data, data_collator=ReportCollator())
    trainer.train()
    if trainer.accelerator.is_main_process:
        from safetensors.torch import save_file

        model = trainer.accelerator.unwrap_model(trainer.model)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out_file)
        print(f"world_size={trainer.args.world_size}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
