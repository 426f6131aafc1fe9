"""Recipe: report → synoptic line, a teacher LM distilled into a student by SFT, supervised KD, GKD or speculative KD.

The task: read a pathology report, write its synoptic line
``organ: … | histology: … | grade: … | t_stage: … | laterality: … | behavior: …``. The recipe trains (or loads) the
teacher, warms the student up with a short SFT, trains one student in ``mode`` and scores them on held-out reports.

    # CPU, seconds: tiny models on synthetic reports (tests run it)
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_quick.yaml
    # the same from an installed package
    reportkd train skd_report_generation --config recipes/configs/skd_report_quick.yaml
    # TCGA reports on CPU, another student mode
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_cpu.yaml --mode on_policy
    # several GPUs (the global batch is per_device_train_batch_size x processes)
    accelerate launch --multi_gpu --num_processes 4 recipes/skd_report_generation.py \
        --config recipes/configs/skd_report_gpu.yaml
    # LoRA student (adapter saved next to the warm start), hub models
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_gpu.yaml --lora_r 16 \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --teacher_model_name_or_path <SFT'd teacher>
    # checkpoints every 50 steps, then continue an interrupted run from the newest one
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_cpu.yaml \
        --save_strategy steps --save_steps 50
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_cpu.yaml --resume_from_checkpoint last
    # push the student (private repository) or write it to a local hub folder
    python recipes/skd_report_generation.py --config recipes/configs/skd_report_quick.yaml \
        --push_to_hub --hub_model_id org/skd-student --hub_local_dir /models/hub
    # every mode from the same warm start, one table (was --modes here): the ablation benchmark
    python benchmarks/skd_ablation.py --config recipes/configs/skd_report_cpu.yaml --modes sft skd skd@top_k=5

The recipe's logic is :mod:`reportkd.text.skd.recipe`. Results go to ``<output_dir>/results.json``, generations to
``<output_dir>/predictions/<model>.jsonl`` (re-score them with ``reportkd evaluate generations --predictions
<file>``) and the student, with its card, to ``<output_dir>/<mode>/`` (``reportkd push`` uploads it). A non-empty
``--output_dir`` is refused unless ``--overwrite_output_dir`` or ``--resume_from_checkpoint`` is given.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.text.skd.recipe.main` on the command line (the config's ``env:`` block set first)."""
    script_main("reportkd.text.skd.recipe:main")


if __name__ == "__main__":
    main()
