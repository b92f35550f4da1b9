# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen push`: a self-contained model folder to a Hugging Face Hub repo, in one commit."""

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="publish a converted or exported model folder to the Hugging Face Hub",
        description="Check that a model folder is self-contained and loads, bring its model card's Hub metadata up to "
        "date (license, pipeline_tag, tags, base_model, sample grid, scores), then create the Hub repo if needed and "
        "upload the folder in one commit. Nothing is uploaded if any check fails.",
    )
    parser.add_argument("folder", help="a folder written by pixelgen convert or pixelgen export")
    parser.add_argument("repo_id", metavar="OWNER/REPO", help="the Hub model repo (created if it does not exist)")
    parser.add_argument("--subfolder", metavar="NAME", help="put the folder in this subfolder of the repo")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo is kept)")
    parser.add_argument("--message", help="commit message (default: Upload FOLDER with pixelgen push)")
    parser.add_argument(
        "--license",
        help="the weights' license as a Hub license id (e.g. mit); needed when the folder's card records none",
    )
    parser.add_argument("--base-model", metavar="REPO_ID", help="the Hub model these weights derive from")
    parser.add_argument("--eval-json", help="scores to show on the card (pixelgen eval-demo --json output)")
    parser.add_argument("--sample-grid", metavar="PNG", help="an image grid to show on the card (samples.png)")
    parser.add_argument("--token", help="Hugging Face token (default: hf auth login's, or HF_TOKEN)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..conversion.push import push_to_hub

    commit = push_to_hub(
        args.folder,
        args.repo_id,
        subfolder=args.subfolder,
        private=args.private,
        commit_message=args.message,
        license=args.license,
        base_model=args.base_model,
        eval_json=args.eval_json,
        sample_grid=args.sample_grid,
        token=args.token,
    )
    print(f"Pushed {args.folder} -> {commit.commit_url}")
    return 0
