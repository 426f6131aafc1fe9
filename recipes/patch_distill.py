"""Recipe: distil pathology patch encoders into a small student (GPFM multi-expert, H0-mini DINO/iBOT, HVisKD).

    # CPU, seconds: two tiny experts trained on synthetic tasks, then a multi-expert + relation KD student (tests)
    python recipes/patch_distill.py --config recipes/configs/patch_distill_quick.yaml
    # the same from an installed package
    reportkd train patch_distill --config recipes/configs/patch_distill_quick.yaml
    # H0-mini style: DINO + iBOT from the frozen experts, multi-crop and masked tokens
    python recipes/patch_distill.py --config recipes/configs/patch_distill_quick.yaml --feature_weight 0 \
        --dino_weight 1 --ibot_weight 1 --num_global 2 --num_local 2 --global_scale_min 0.5 --mask_ratio 0.3 \
        --overwrite_output_dir
    # several GPUs, real teachers (offline weights through $REPORTKD_ENCODER_WEIGHTS), tiles from slides
    accelerate launch --multi_gpu --num_processes 4 recipes/patch_distill.py \
        --config recipes/configs/patch_distill_gpu.yaml --output_dir runs/patch_gpfm
    # continue an interrupted run (saved with --save_strategy steps) from its newest checkpoint
    python recipes/patch_distill.py --config recipes/configs/patch_distill_quick.yaml --resume_from_checkpoint last
    # push the student (private) or write it to a local hub folder
    python recipes/patch_distill.py --config recipes/configs/patch_distill_quick.yaml \
        --push_to_hub --hub_model_id org/patch-student --hub_local_dir /models/hub

The recipe's logic is :func:`reportkd.vlm.patch.recipe.main`. The student is saved under ``<output_dir>/student``
(``reportkd extract --encoder <output_dir>/student`` uses it) with ``eval_results.json`` (probes, agreement with each
teacher, stain robustness, speed), ``teacher_eval_results.json``, ``distillation.json`` and a model card. YAML keys
are the field names of ``ScriptArguments`` and ``PatchDistillationConfig`` (plus ``env:``); flags override them. A
non-empty ``--output_dir`` is refused unless ``--overwrite_output_dir`` or resuming.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.vlm.patch.recipe.main` (the config's ``env:`` block set first)."""
    script_main("reportkd.vlm.patch.recipe:main")


if __name__ == "__main__":
    main()
