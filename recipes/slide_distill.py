"""Recipe: distil a teacher slide encoder into a smaller student, optionally across magnifications (XMAG).

    # CPU, seconds: tiny teacher aligned first, then an XMAG student on the coarse grid (tests run it)
    python recipes/slide_distill.py --config recipes/configs/slide_distill_quick.yaml
    # the same from an installed package
    reportkd train slide_distill --config recipes/configs/slide_distill_quick.yaml
    # offline demo, ~2 minutes on CPU: 400 synthetic slides, teacher on the fine grid, student on 4x fewer patches
    python recipes/slide_distill.py --config recipes/configs/slide_distill_synthetic.yaml
    python recipes/slide_distill.py --config recipes/configs/slide_distill_synthetic.yaml --xmag false  # same grid
    # several GPUs: a saved teacher (e.g. recipes/slide_align.py output) at 20x, the student on 5x features
    accelerate launch --multi_gpu --num_processes 4 recipes/slide_distill.py \
        --config recipes/configs/slide_distill_synthetic.yaml --teacher_train_steps 0 \
        --teacher_model_name_or_path runs/slide_align/model --features /data/features_5x \
        --teacher_features /data/features_20x --labels /data/labels.csv --eval_features /data/features_5x \
        --eval_teacher_features /data/features_20x --hidden_size 384 --num_hidden_layers 4 --num_attention_heads 6 \
        --output_dir runs/slide_xmag
    # continue an interrupted run (saved with --save_strategy steps) from its newest checkpoint
    python recipes/slide_distill.py --config recipes/configs/slide_distill_synthetic.yaml --resume_from_checkpoint last
    # push the student (private) or write it to a local hub folder
    python recipes/slide_distill.py --config recipes/configs/slide_distill_quick.yaml \
        --push_to_hub --hub_model_id org/slide-student --hub_local_dir /models/hub

The recipe's logic is :func:`reportkd.vlm.slide.recipes.distill_main`. The teacher is a saved ``SlideEncoderModel``
or ``SlideReportModel`` folder (``teacher_model_name_or_path``), or, for the offline demo, aligned with reports on
the fine grid first (``teacher_train_steps > 0``). XMAG: the student reads ``features`` (the coarse grid, e.g. 5x)
and the teacher ``teacher_features`` (the fine grid, e.g. 20x, same slide ids, same level-0 coordinates). The student
is saved under ``<output_dir>/student`` with ``eval_results.json`` (student and teacher), ``distillation.json`` and a
model card. YAML keys are the field names of ``DistillArguments`` and ``SlideDistillationConfig`` (plus ``env:``);
flags override them. A non-empty ``--output_dir`` is refused unless ``--overwrite_output_dir`` or resuming.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.vlm.slide.recipes.distill_main` (the config's ``env:`` block set first)."""
    script_main("reportkd.vlm.slide.recipes:distill_main")


if __name__ == "__main__":
    main()
