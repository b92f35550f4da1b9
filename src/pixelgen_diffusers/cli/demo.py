# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen demo`: a web app to try a PixelGen model (needs the [demo] extra)."""

import argparse
import ipaddress
import os
import re
import socket
import time

from ..demo.app import build_app, import_gradio, launch_app
from ..utils import DTYPE_NAMES, default_dtype, resolve_device
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
    parser.add_argument(
        "--host",
        help="address to bind (default: GRADIO_SERVER_NAME if set, else 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, help="port (default: GRADIO_SERVER_PORT if set, else 7860)")
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, help="model dtype (default: bfloat16 on CUDA, float32 elsewhere)"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_trust_remote_code_argument(parser)
    parser.set_defaults(func=run)


def server_address(host: str | None, port: int | None) -> tuple[str, int]:
    """`--host` and `--port`, else Gradio's GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, else 127.0.0.1:7860; checked
    before the model loads."""
    option = "--host" if host is not None else "GRADIO_SERVER_NAME"
    host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    if port is None:
        text = os.environ.get("GRADIO_SERVER_PORT") or "7860"
        if not text.strip().isdigit():
            raise ValueError(f"GRADIO_SERVER_PORT must be a port number in [1, 65535], got {text!r}")
        port, port_option = int(text), "GRADIO_SERVER_PORT"
    else:
        port_option = "--port"
    if not 1 <= port <= 65535:
        raise ValueError(f"{port_option} must be in [1, 65535], got {port}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # Not an address: a host name, which must resolve (a dotted number such as 999.1.1.1 never does).
        error = None
        if re.fullmatch(r"[0-9.]+", host):
            error = "not a valid IPv4 address"
        else:
            try:
                socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as lookup:
                error = f"cannot be resolved ({lookup})"
        if error is not None:
            raise ValueError(
                f"{option} {host!r} is {error}; use an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
            )
    return host, port


def run(args: argparse.Namespace) -> int:
    import_gradio()  # before loading a model, so a missing extra fails at once
    from ..conversion.hub import load_pipeline

    host, port = server_address(args.host, args.port)
    device = resolve_device(args.device)
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
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pixelgen demo: serving on {host}: anyone who can reach it can use this app")
    try:
        launch_app(app, host=host, port=port, block=False)
    except OSError as error:
        if "port" not in str(error).lower():
            raise
        raise ValueError(
            f"cannot serve on {host}:{port}: the port is in use (or not allowed); choose another with --port"
        ) from None
    try:
        while True:  # until Ctrl-C, which ends the command with status 130 as every other command's does
            time.sleep(0.2)
    finally:
        app.close()
