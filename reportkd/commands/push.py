"""``reportkd push``: upload a saved model with a generated model card (private by default).

    reportkd push runs/mtcnn/student --repo-id org/mtcnn-student --dry-run        # list what would be uploaded
    reportkd push runs/mtcnn/student --repo-id org/mtcnn-student                  # private hub repository
    reportkd push runs/mtcnn/student --repo-id org/mtcnn-student --local-hub /models/hub   # air-gapped folder hub
    HF_ENDPOINT=https://hub.hospital.org reportkd push DIR --repo-id org/name     # self-hosted hub

The model kind (MtCNN classifier, causal-LM student / LoRA adapter, open_clip student, slide encoder) is detected
from the folder, and only the files that kind declares are uploaded (safetensors weights, configs, tokenizer files,
thresholds, provenance, metrics, the card); everything else is left out and listed with the reason. Secret-looking
names (``.env``, ``credentials*``, ``*token*``, ``*secret*``…), pickle files and symlinks leading outside the folder
are never uploaded; data-like files (``*.jsonl``, reports, predictions) only with ``--include`` naming them exactly.
A push never deletes files of the destination unless ``--delete-missing``; ``--dry-run`` prints exactly what would
be uploaded, left out and deleted. The token is ``--token``, else ``$HF_TOKEN``, else the ``hf auth login`` one.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="Saved model folder (save_pretrained / save_open_clip output).")
    p.add_argument("--repo-id", required=True, help="Repository id, org/name.")
    p.add_argument("--local-hub", metavar="HUB_DIR", help="Write HUB_DIR/org/name/ instead of uploading.")
    p.add_argument(
        "--dry-run", action="store_true", help="List what would be uploaded, left out and deleted; change nothing."
    )
    p.add_argument("--public", action="store_true", help="Create a public repository (default: private).")
    p.add_argument("--token", help="Hub token (prefer $HF_TOKEN or `hf auth login`: flags end up in shell history).")
    p.add_argument("--endpoint", help="Hub URL, e.g. a self-hosted hub (default: $HF_ENDPOINT, else huggingface.co).")
    p.add_argument("--commit-message", help="Commit message.")
    p.add_argument("--revision", help="Branch to commit to (hub only).")
    p.add_argument("--kind", help="Model kind when detection is ambiguous (mtcnn, causal_lm, open_clip, …).")
    p.add_argument("--license", help="Licence in the card's front matter (default: distillation.json's, else other).")
    p.add_argument(
        "--include", action="append", default=[], metavar="PATTERN",
        help="Also upload files matching this path or glob, relative to DIR (repeatable). Data-like files "
             "(*.jsonl, reports, predictions) need their exact path; secret-looking names, pickle files and paths "
             "outside DIR are refused.",
    )  # fmt: skip
    p.add_argument(
        "--delete-missing", action="store_true",
        help="Delete files of the destination repository that this push does not upload (default: keep them).",
    )  # fmt: skip
    card = p.add_mutually_exclusive_group()
    card.add_argument(
        "--card-only", action="store_true",
        help="Write the generated card to DIR/README.md and stop (edit it, then push with --no-card).",
    )  # fmt: skip
    card.add_argument("--no-card", action="store_true", help="Upload DIR/README.md as it is; generate no card.")


def run(args: argparse.Namespace) -> int:
    from reportkd.hub import push_to_hub, write_card

    if args.card_only:
        path = write_card(args.folder, args.repo_id, kind=args.kind, license=args.license)
        print(f"Wrote the model card to {path}; review it, then push with --no-card to keep your edits.")
        return 0
    result = push_to_hub(
        args.folder, args.repo_id, private=not args.public, token=args.token, endpoint=args.endpoint,
        local_hub=args.local_hub, dry_run=args.dry_run, commit_message=args.commit_message, kind=args.kind,
        card=not args.no_card, include=args.include, license=args.license, revision=args.revision,
        delete_missing=args.delete_missing,
    )  # fmt: skip
    if args.dry_run:
        where = "local hub folder" if args.local_hub else f"{'private' if not args.public else 'public'} repository"
        print(f"Dry run: nothing uploaded. Destination: {where} {result.location}")
        print(result.plan.describe())
        return 0
    plan = result.plan
    if plan.left_out:
        print(f"Left out {len(plan.left_out)} file(s) a {plan.kind} model does not declare (--include to add):")
        print("\n".join(f"  - {name}  ({why})" for name, why in plan.left_out.items()))
    if plan.deletions:
        print(f"Deleted {len(plan.deletions)} file(s) not in this push: {', '.join(plan.deletions)}")
    if args.local_hub:
        print(f"Wrote {len(result.files)} file(s) to {result.location}; load it with from_pretrained(that folder).")
    else:
        visibility = "private" if result.private else "public"
        print(f"Pushed {len(result.files)} file(s) to {result.location} ({visibility} when created).")
    return 0
