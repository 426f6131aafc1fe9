"""Recipe: distil an open_clip teacher (e.g. QuiltNet) into a small open_clip student.

    # CPU, seconds: tiny models on synthetic H&E tiles (tests run it)
    python recipes/clip_distill.py --config recipes/configs/clip_distill_quick.yaml
    # the same from an installed package
    reportkd train clip_distill --config recipes/configs/clip_distill_quick.yaml
    # offline demo, ~10 minutes on CPU: a teacher trained from scratch, then distilled
    python recipes/clip_distill.py --config recipes/configs/clip_distill_synthetic.yaml
    # several GPUs, QuiltNet teacher from the hub (2 CPU processes: --multi_gpu with CUDA hidden and --use_cpu)
    accelerate launch --multi_gpu --num_processes 4 recipes/clip_distill.py --config recipes/configs/clip_distill.yaml
    # LoRA student (adapters merged into plain open_clip weights when saved)
    python recipes/clip_distill.py --config recipes/configs/clip_distill_quick.yaml --lora_r 8
    # checkpoints every 100 steps, then continue an interrupted run from the newest one
    python recipes/clip_distill.py --config recipes/configs/clip_distill.yaml --save_strategy steps --save_steps 100
    python recipes/clip_distill.py --config recipes/configs/clip_distill.yaml --resume_from_checkpoint last
    # push the student (private) or write it to a local hub folder
    python recipes/clip_distill.py --config recipes/configs/clip_distill_quick.yaml \
        --push_to_hub --hub_model_id org/clip-student --hub_local_dir /models/hub

The recipe's logic is :mod:`reportkd.vlm.clip.recipe`. A non-empty ``--output_dir`` is refused unless
``--overwrite_output_dir`` or ``--resume_from_checkpoint`` is given.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.vlm.clip.recipe.main` on the command line (the config's ``env:`` block set first)."""
    script_main("reportkd.vlm.clip.recipe:main")


if __name__ == "__main__":
    main()
