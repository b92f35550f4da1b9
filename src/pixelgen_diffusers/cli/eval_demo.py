# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen eval-demo`: score the bundled demo models with the demo classifiers."""

import itertools
from pathlib import Path

from ..evaluation.demo_c2i import METHODS, STOCK_SCHEDULERS, TABLES, evaluate, format_table
from ..evaluation.demo_t2i import DEFAULT_T2I_TABLE, evaluate_t2i, format_t2i_table
from ..utils import MAX_SEED, atomic_write_json, check_output_folder, cli_number, is_text_to_image
from ..utils.sampling_options import CACHES, parse_cache
from .generate import add_threads_argument, set_threads


def add_parser(subparsers) -> None:
    """Registers `pixelgen eval-demo`."""
    parser = subparsers.add_parser(
        "eval-demo",
        help="score the bundled demo models with the demo classifiers (--t2i: GenEval-style, text-to-image)",
        description="Class-to-image (default): accuracy of the demo classifier on generated images and Frechet"
        " distance of its features to real held-out images, per sampler / steps / guidance (/ cache); without"
        " --methods/--steps/--guidance/--caches it runs --table (the README's tables), with any of them their"
        " product. Text-to-image (--t2i): a GenEval-style score on prompts naming colour/shape/background"
        " combinations held out from training, per task and overall, per sampler / steps / guidance.",
    )
    parser.add_argument("--t2i", action="store_true", help="score the text-to-image demo (GenEval-style)")
    parser.add_argument(
        "--model",
        help="a pipeline folder trained on the shapes (or captioned shapes) data (default: the bundled demo)",
    )
    parser.add_argument(
        "--table", choices=tuple(TABLES), default="default", help="preset table: samplers, caches or stock solvers"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS + STOCK_SCHEDULERS,
        help="PixelGenScheduler solvers and/or stock schedulers (default: PixelGen's; --t2i: PixelGen's only)",
    )
    parser.add_argument(
        "--caches",
        nargs="+",
        metavar="NAME[:VALUE]",
        help=f"also run every row under each cache ({', '.join(CACHES)}), with its uncached share of compute",
    )
    parser.add_argument(
        "--steps", nargs="+", type=cli_number(integer=True, minimum=1), help="step counts (default: 10 25)"
    )
    parser.add_argument(
        "--guidance", nargs="+", type=cli_number(), help="guidance scales (default: 1 2 3; --t2i: 2 4)"
    )
    parser.add_argument(
        "--num-samples",
        type=cli_number(integer=True, minimum=1, maximum=100_000),
        help="generated images per row (default 200; not with --t2i)",
    )
    parser.add_argument(
        "--num-real",
        type=cli_number(integer=True, minimum=2, maximum=100_000),
        help="real held-out images for the reference (default 1000; not with --t2i)",
    )
    parser.add_argument(
        "--images-per-prompt",
        type=cli_number(integer=True, minimum=1, maximum=1000),
        help="--t2i: images per evaluation prompt (default 1; 8x for single object)",
    )
    parser.add_argument("--seed", type=cli_number(integer=True, minimum=0, maximum=MAX_SEED), default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    add_threads_argument(parser)
    parser.set_defaults(func=run_from_args)


def check_json_path(path: str | None) -> None:
    """`--json`: checked before any sampling (the file is written atomically at the end, replacing a link rather
    than writing through it)."""
    if path is None:
        return
    if Path(path).is_dir():
        raise ValueError(f"--json {path}: is a folder; name a file, e.g. {Path(path) / 'scores.json'}")
    check_output_folder(Path(path).expanduser().parent, f"--json {path}: its folder")


def load_model(model: str, text_to_image: bool, threads: int | None):
    """The pipeline to score, refused (before any output) when it is not the kind the score is for."""
    from ..conversion.hub import load_pipeline

    pipeline = load_pipeline(model)
    if is_text_to_image(pipeline) != text_to_image:
        kind = "a text-to-image" if is_text_to_image(pipeline) else "a class-to-image"
        remedy = "drop --t2i" if not is_text_to_image(pipeline) else "pass --t2i"
        raise ValueError(f"--model {model} is {kind} model; {remedy} to score it (or pass a model of the other kind)")
    pipeline.set_progress_bar_config(disable=True)
    set_threads(threads, pipeline)
    return pipeline


def run_from_args(args) -> int:
    from ..demo import model_dir

    check_json_path(args.json)
    for option, value in (
        ("--steps", min(args.steps or [1])),
        ("--num-samples", args.num_samples),
        ("--num-real", args.num_real),
        ("--images-per-prompt", args.images_per_prompt),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value}")
    if args.t2i:
        if args.num_samples is not None or args.num_real is not None:
            raise ValueError(
                "--num-samples and --num-real are for the class-to-image score; with --t2i use --images-per-prompt"
            )
        if args.caches or args.table != "default":
            raise ValueError("--caches and --table are for the class-to-image score, not --t2i")
        stock = [method for method in args.methods or () if method not in METHODS]
        if stock:
            raise ValueError(f"--t2i scores PixelGen's solvers ({', '.join(METHODS)}), got {', '.join(stock)}")

        args.images_per_prompt = args.images_per_prompt or 1
        return run_t2i(args)
    if args.images_per_prompt is not None:
        raise ValueError("--images-per-prompt is for the text-to-image score (--t2i)")
    num_samples = args.num_samples if args.num_samples is not None else 200
    num_real = args.num_real if args.num_real is not None else 1000

    pipeline = load_model(args.model or str(model_dir()), text_to_image=False, threads=args.threads)
    if args.methods or args.steps or args.guidance or args.caches:
        for cache in args.caches or ():
            parse_cache(cache)  # bad specs fail before any sampling
        table = list(
            itertools.product(
                args.methods or METHODS,
                args.steps or (10, 25),
                args.guidance or (1.0, 2.0, 3.0),
                (None, *(args.caches or ())),
            )
        )
    else:
        table = TABLES[args.table]
    print(format_table([]))
    rows = evaluate(pipeline, table, num_samples, num_real, args.seed, progress=True)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def run_t2i(args) -> int:
    """`pixelgen eval-demo --t2i`."""
    from ..demo import t2i_model_dir

    pipeline = load_model(args.model or str(t2i_model_dir()), text_to_image=True, threads=args.threads)
    if args.methods or args.steps or args.guidance:
        steps, guidance = args.steps or (10, 25), args.guidance or (2.0, 4.0)
        table = list(itertools.product(args.methods or METHODS, steps, guidance))
    else:
        table = DEFAULT_T2I_TABLE
    print(format_t2i_table([]))
    rows = evaluate_t2i(pipeline, table, args.images_per_prompt, args.seed, progress=True)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
