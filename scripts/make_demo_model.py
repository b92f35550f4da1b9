#!/usr/bin/env python
# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Regenerates the bundled demo end to end: the shapes dataset, the model (trained with `pixelgen train`'s trainer),
the scoring classifier, the evaluation table, the choice of default sampling settings, and the exported folder
under src/pixelgen_diffusers/demo/model.

    python scripts/make_demo_model.py            # about 47 minutes on a busy 2-core CPU

Rerunning resumes an interrupted training run from its last checkpoint in --work-dir. After editing the pipeline,
transformer or scheduler modules, `--refresh-code` copies the new code into the shipped folders (this one and the
text-to-image demo's; code files only: configs and weights stay as they are; no training).
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from pixelgen_diffusers import PixelGenC2IPipeline
from pixelgen_diffusers.conversion.export import export_pipeline, refresh_code
from pixelgen_diffusers.demo import model_dir, write_shapes_dataset
from pixelgen_diffusers.demo.classifier import CLASSIFIER_PATH, train_classifier
from pixelgen_diffusers.demo.shapes import TRAIN_SEED
from pixelgen_diffusers.evaluation.demo_c2i import DEFAULT_TABLE, choose_default, evaluate, format_table
from pixelgen_diffusers.training import TrainingConfig, train


DEMO_MODEL = dict(patch_size=8, hidden_size=128, depth=6, num_heads=4, in_context_len=4, in_context_start=2)


def export_demo(pipeline, output_dir: Path) -> None:
    """Exports as a self-contained folder, without recording where the pipeline was loaded from."""
    pipeline.register_to_config(_name_or_path="pixelgen_diffusers/demo/model")
    export_pipeline(pipeline, output_dir, overwrite=True)
    fix_model_card(output_dir / "README.md")


def fix_model_card(path: Path) -> None:
    """The exporter's card is written for converted upstream checkpoints; this model's weights are our own."""
    text = path.read_text().replace("# model\n", "# pixelgen-diffusers demo: 10 shapes at 32x32\n", 1)
    license_text = (
        "Code and weights are MIT-licensed (pixelgen-diffusers). The weights were trained from scratch by"
        " `scripts/make_demo_model.py` on procedurally generated shapes."
    )
    path.write_text(re.sub(r"## License\n\n.*?\n\n", f"## License\n\n{license_text}\n\n", text, count=1, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/pixelgen-demo", help="dataset and training checkpoints")
    parser.add_argument("--output-dir", default=str(model_dir()), help="where the exported demo model goes")
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=6e-4)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest on a busy 2-core machine (2 threads oversubscribe it)",
    )
    parser.add_argument("--eval-samples", type=int, default=200, help="generated images per table row")
    parser.add_argument(
        "--refresh-code",
        action="store_true",
        help="only copy the installed package's code into the shipped models (after editing the pipeline,"
        " transformer or scheduler modules); configs and weights are left as they are; no training",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    if args.refresh_code:
        for path in refresh_code(output_dir):
            print(f"refreshed {path}")
        # The text-to-image demo ships the same scheduler and its own pipeline/transformer code: refresh it too.
        t2i_script = Path(__file__).with_name("make_demo_t2i_model.py")
        subprocess.run([sys.executable, str(t2i_script), "--refresh-code"], check=True)
        return
    work_dir = Path(args.work_dir)
    timings = {}

    start = time.perf_counter()
    data_dir = work_dir / "shapes"
    if not data_dir.is_dir():
        write_shapes_dataset(data_dir, args.images_per_class, seed=TRAIN_SEED)
    timings["dataset"] = time.perf_counter() - start

    start = time.perf_counter()
    config = TrainingConfig(
        data_dir=str(data_dir),
        output_dir=str(work_dir / "run"),
        sample_size=32,
        model_config=DEMO_MODEL,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        ema_decay=args.ema_decay,
        num_workers=1,
        log_every=100,
        sample_every=1000,
        checkpoint_every=1000,
        checkpoints_total_limit=2,
        resume="latest",
        num_inference_steps=20,
    )
    checkpoint = train(config)
    timings["training"] = time.perf_counter() - start

    start = time.perf_counter()
    classifier, accuracy = train_classifier()
    print(f"Classifier accuracy on real held-out images: {accuracy:.2%} (saved to {CLASSIFIER_PATH})")
    timings["classifier"] = time.perf_counter() - start

    start = time.perf_counter()
    pipeline = PixelGenC2IPipeline.from_pretrained(checkpoint)
    pipeline.set_progress_bar_config(disable=True)
    rows = evaluate(pipeline, DEFAULT_TABLE, num_samples=args.eval_samples, classifier=classifier)
    print(format_table(rows))
    default = choose_default(rows)
    print(f"Default sampling settings: {json.dumps(default)}")
    timings["evaluation"] = time.perf_counter() - start

    pipeline.register_to_config(num_inference_steps=default["steps"], guidance_scale=default["guidance_scale"])
    pipeline.scheduler.register_to_config(sampling_method=default["method"])
    export_demo(pipeline, output_dir)
    (work_dir / "eval_table.json").write_text(json.dumps({"rows": rows, "default": default}, indent=2))
    timings["total"] = sum(timings.values())
    print("Wall time (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))


if __name__ == "__main__":
    main()
