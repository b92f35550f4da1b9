# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""The quality gate of `--quantize int8wo` (docs/publishing.md): the bundled demo models in float32 and quantized,
scored with their demo classifiers at their stored recipes (class-to-image: `evaluation.demo_c2i.evaluate`;
text-to-image: the GenEval-style `evaluation.demo_t2i.evaluate_t2i`), with the bytes the weights occupy. Prints
Markdown tables.

    python scripts/measure_quantization.py --num-samples 1000 --images-per-prompt 4
"""

import argparse

import torch

from pixelgen_diffusers.conversion.hub import load_pipeline
from pixelgen_diffusers.conversion.model_folder import format_size
from pixelgen_diffusers.conversion.quantization import load_quantized, stored_bytes
from pixelgen_diffusers.demo import model_dir, t2i_model_dir
from pixelgen_diffusers.evaluation.demo_c2i import evaluate
from pixelgen_diffusers.evaluation.demo_t2i import evaluate_t2i


def recipe(pipeline) -> tuple:
    config = pipeline.config
    return pipeline.scheduler.config.sampling_method, config.num_inference_steps, config.guidance_scale


def memory(pipeline) -> str:
    parts = [f"transformer {format_size(stored_bytes(pipeline.transformer))}"]
    if getattr(pipeline, "text_encoder", None) is not None:
        parts.append(f"text encoder {format_size(stored_bytes(pipeline.text_encoder))}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000, help="class-to-image images per row")
    parser.add_argument("--images-per-prompt", type=int, default=4, help="text-to-image images per prompt")
    parser.add_argument("--quantize", nargs="+", default=["int8wo"])
    parser.add_argument("--models", nargs="+", choices=("c2i", "t2i"), default=["c2i", "t2i"])
    args = parser.parse_args()
    for model in args.models:
        folder = model_dir() if model == "c2i" else t2i_model_dir()
        loaded = {"float32": load_pipeline(folder, dtype=torch.float32)}
        for name in args.quantize:
            loaded[name] = load_quantized(folder, name, "cpu", dtype=torch.float32)
        setting = recipe(loaded["float32"])
        if model == "c2i":
            print(f"\nclass-to-image demo, {setting}, {args.num_samples} images\n")
            print("| weights | memory | accuracy | Frechet distance | s / image |\n| --- | --- | ---: | ---: | ---: |")
        else:
            print(f"\ntext-to-image demo, {setting}, {args.images_per_prompt} images per prompt\n")
            print("| weights | memory | overall | s / image |\n| --- | --- | ---: | ---: |")
        for name, pipeline in loaded.items():
            pipeline.set_progress_bar_config(disable=True)
            if model == "c2i":
                row = evaluate(pipeline, [setting], num_samples=args.num_samples)[-1]
                scores = f"{100 * row['accuracy']:.1f}% | {row['frechet_distance']:.2f}"
            else:
                row = evaluate_t2i(pipeline, [setting], images_per_prompt=args.images_per_prompt)[-1]
                scores = f"{row['overall']:.3f}"
            print(f"| {name} | {memory(pipeline)} | {scores} | {row['seconds_per_image']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
