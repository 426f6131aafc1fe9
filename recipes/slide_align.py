"""Recipe: align a TITAN-style slide encoder (2D-ALiBi ViT over patch features) with pathology reports.

    # CPU, seconds: tiny encoder and text tower on synthetic slides (tests run it)
    python recipes/slide_align.py --config recipes/configs/slide_align_quick.yaml
    # the same from an installed package
    reportkd train slide_align --config recipes/configs/slide_align_quick.yaml
    # offline demo, ~1 minute on CPU: 400 synthetic slides with reports, 300 steps
    python recipes/slide_align.py --config recipes/configs/slide_align_synthetic.yaml
    # several GPUs, features from `reportkd extract` (e.g. CONCH v1.5, 768-d) and a report text model
    accelerate launch --multi_gpu --num_processes 4 recipes/slide_align.py \
        --config recipes/configs/slide_align_synthetic.yaml --features /data/features_20x \
        --labels /data/labels.csv --eval_features /data/features_20x --text_encoder hf:/models/report-bert \
        --hidden_size 768 --num_hidden_layers 6 --num_attention_heads 12 --crop_size 16 --output_dir runs/slide_align
    # checkpoints every 100 steps, then continue an interrupted run from the newest one
    python recipes/slide_align.py --config recipes/configs/slide_align_synthetic.yaml --save_strategy steps \
        --save_steps 100
    python recipes/slide_align.py --config recipes/configs/slide_align_synthetic.yaml --resume_from_checkpoint last
    # push the model (private) or write it to a local hub folder
    python recipes/slide_align.py --config recipes/configs/slide_align_quick.yaml \
        --push_to_hub --hub_model_id org/slide-encoder --hub_local_dir /models/hub

The recipe's logic is :func:`reportkd.vlm.slide.recipes.align_main`. The slide-report model is saved under
``<output_dir>/model`` (safetensors, configs, ``eval_results.json``, ``distillation.json`` and a model card): its top
level is the slide encoder (``AutoModel.from_pretrained``), ``SlideReportModel.from_pretrained`` loads it whole.
YAML keys are the field names of ``AlignArguments`` and ``SlideAlignmentConfig`` (plus ``env:``); flags override
them. A non-empty ``--output_dir`` is refused unless ``--overwrite_output_dir`` or ``--resume_from_checkpoint``.
"""

from reportkd.recipes import script_main


def main() -> None:
    """Runs :func:`reportkd.vlm.slide.recipes.align_main` (the config's ``env:`` block set first)."""
    script_main("reportkd.vlm.slide.recipes:align_main")


if __name__ == "__main__":
    main()
