"""Recipe: MtCNN teacher ensemble → soft labels → distilled student (+ hard-label baseline, DAC) → abstention.

Ensemble distillation of multitask report classifiers (De Angeli et al., JAMIA Open 2022): the job of
``reportkd demo`` (:func:`reportkd.text.mtcnn.job.run_mtcnn_job`) from a YAML config. The teacher ensemble is trained
as one vectorized module (out-of-fold soft labels with ``folds > 1``); ensemble, student, baseline and DAC all train
with this run's training arguments; thresholds are calibrated per task at ``target_accuracy`` on a calibration split.

    # CPU, seconds, synthetic reports
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_quick.yaml
    # the same from an installed package
    reportkd train mtcnn_distill --config recipes/configs/mtcnn_distill_quick.yaml
    # TCGA reports (from the repository root; ../shared/data/tcga-reports/reports.jsonl.gz)
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_tcga.yaml
    # several GPUs; the global batch is per_device_train_batch_size × processes (here 2 × 16 = the config's 32)
    accelerate launch --multi_gpu --num_processes 2 recipes/mtcnn_distill.py \
        --config recipes/configs/mtcnn_distill_tcga.yaml --per_device_train_batch_size 16
    # 2 CPU processes (torchrun + gloo; `accelerate launch --cpu` starts only one): hide CUDA, set use_cpu
    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 recipes/mtcnn_distill.py \
        --config recipes/configs/mtcnn_distill_quick.yaml --per_device_train_batch_size 16 --use_cpu true
    # checkpoints every 50 steps; an interrupted run continues stage by stage (and from the newest checkpoint)
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_tcga.yaml --save_strategy steps \
        --save_steps 50
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_tcga.yaml --resume_from_checkpoint last
    # push the student (private) or write it to a local hub folder
    python recipes/mtcnn_distill.py --config recipes/configs/mtcnn_distill_quick.yaml \
        --push_to_hub --hub_model_id org/mtcnn-student --hub_local_dir /models/hub

Outputs in ``output_dir``: ``student/``, ``baseline/`` and ``dac/`` (model, tokenizer, ``thresholds.json``,
``eval_results.json``, ``distillation.json``; ``reportkd push`` uploads them with a model card), ``ensemble/``,
``soft_labels.safetensors``, ``results.json``, ``table.md`` and ``work/`` (stage manifests, checkpoints). A non-empty
``output_dir`` is refused unless ``--overwrite_output_dir`` or ``--resume_from_checkpoint`` is given.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.text.mtcnn.recipe.main` on the command line (the config's ``env:`` block set first)."""
    script_main("reportkd.text.mtcnn.recipe:main")


if __name__ == "__main__":
    main()
