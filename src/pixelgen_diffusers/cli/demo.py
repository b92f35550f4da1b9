# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen demo`: a web app to try a PixelGen model (needs the [demo] extra)."""

import argparse

import torch

from ..demo.app import build_app, import_gradio, launch_app
from ..utils import DTYPE_NAMES, default_dtype
from .generate import add_trust_remote_code_argument, demo_model_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a web app to try a PixelGen model (needs the [demo] extra)",
        description='A Gradio web app for a PixelGen model folder or Hub id (pip install "pixelgen-diffusers[demo]").',
    )
    parser.add_argument(
        "--model", help="folder, owner/repo or owner/repo/subfolder (default: the bundled class-to-image demo model)"
    )
    parser.add_argument(
        "--text-to-image",
        action="store_true",
        help="serve the bundled text-to-image demo model (offline, prompts such as 'a red star on a blue background')",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, help="model dtype (default: bfloat16 on CUDA, float32 elsewhere)"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_trust_remote_code_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import_gradio()  # before loading a model, so a missing extra fails at once
    from ..conversion.hub import load_pipeline

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if args.text_to_image and args.model is not None:
        raise ValueError(
            "--text-to-image serves the bundled text-to-image demo model; give it or --model, not both"
            " (a --model folder's own kind decides its tab)"
        )
    model = args.model if args.model is not None else demo_model_dir(text_to_image=args.text_to_image)
    dtype = default_dtype(args.dtype, device)
    pipeline = load_pipeline(model, dtype=dtype, trust_remote_code=args.trust_remote_code).to(device)
    pipeline.set_progress_bar_config(disable=True)
    app = build_app(pipeline, model=args.model, dtype=str(dtype).removeprefix("torch."))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pixelgen demo: serving on {args.host}: anyone who can reach it can use this app")
    launch_app(app, host=args.host, port=args.port)
    return 0
