#!/usr/bin/env python
# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""A LoRA on the bundled demo model that teaches it a new background: every shape on plain white.

Trains the LoRA with `pixelgen train`'s trainer on the demo's shapes redrawn on white, then samples the same seeds
with the base model, with the LoRA, and after `unload_lora_weights`, and reports:

- white background: the share of border pixels (a 2-pixel frame, where the shapes never reach) that are white
  (every channel >= 0.8), averaged over the images; the change the LoRA is meant to make;
- class accuracy: the demo classifier's accuracy on the same images; the shapes should stay what was asked for
  (for reference, also its accuracy on real shapes drawn on white, which its training data never showed);
- whether the samples after `unload_lora_weights` equal the base model's bit for bit.

    python scripts/demo_lora.py          # about 8 minutes on a busy 2-core CPU
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from pixelgen_diffusers.conversion.hub import load_package_pipeline
from pixelgen_diffusers.demo import model_dir, write_shapes_dataset
from pixelgen_diffusers.demo.classifier import accuracy, load_classifier
from pixelgen_diffusers.demo.shapes import CLASS_NAMES, EVAL_SEED, render_shape
from pixelgen_diffusers.evaluation.demo_c2i import generate
from pixelgen_diffusers.training import TrainingConfig, train


WHITE = (255, 255, 255)


def white_background_share(images: torch.Tensor, border: int = 2, threshold: float = 0.8) -> float:
    """Mean share of the frame pixels of [-1, 1] images whose three channels are all >= `threshold` in [0, 1]."""
    pixels = (images + 1) / 2
    frame = torch.ones(images.shape[-2:], dtype=torch.bool)
    frame[border:-border, border:-border] = False
    white = (pixels.amin(dim=1) >= threshold)[:, frame]
    return white.float().mean().item()


def real_white_shapes(num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out real shapes on white (the evaluation split's seed), classes in turn, as [-1, 1] tensors."""
    labels = torch.arange(num_samples) % len(CLASS_NAMES)
    images = [
        np.asarray(render_shape(int(label), np.random.default_rng([EVAL_SEED, int(label), index]), 32, WHITE))
        for index, label in enumerate(labels)
    ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1, labels


def save_comparison(base: torch.Tensor, lora: torch.Tensor, path: Path) -> None:
    """The first image of each class, base model above, with the LoRA below, 4x enlarged."""
    rows = [torch.cat(list(images[: len(CLASS_NAMES)]), dim=2) for images in (base, lora)]
    pixels = ((torch.cat(rows, dim=1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    image = PIL.Image.fromarray(pixels)
    image.resize((image.width * 4, image.height * 4), resample=PIL.Image.NEAREST).save(path)


def score(pipeline, classifier, num_samples: int, seed: int) -> tuple[dict, torch.Tensor]:
    settings = pipeline.config
    images, labels = generate(
        pipeline,
        pipeline.scheduler.config.sampling_method,
        settings.num_inference_steps,
        settings.guidance_scale,
        num_samples,
        seed,
    )
    metrics = {
        "white_background": white_background_share(images),
        "class_accuracy": accuracy(classifier, images, labels),
    }
    return metrics, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/pixelgen-demo-lora")
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--lora-rank", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    work_dir = Path(args.work_dir)
    data_dir = work_dir / "white"
    if not data_dir.is_dir():
        write_shapes_dataset(data_dir, args.images_per_class, seed=5, background_color=WHITE)
    start = time.perf_counter()
    checkpoint = train(
        TrainingConfig(
            data_dir=str(data_dir),
            output_dir=str(work_dir / "run"),
            pretrained=str(model_dir()),
            lora_rank=args.lora_rank,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            num_workers=0,
            log_every=50,
            sample_every=args.max_steps,
            checkpoint_every=args.max_steps,
            resume="latest",
        )
    )
    training_seconds = time.perf_counter() - start

    classifier = load_classifier()
    pipeline = load_package_pipeline(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    num_parameters = sum(parameter.numel() for parameter in pipeline.transformer.parameters())
    base, base_images = score(pipeline, classifier, args.num_samples, args.seed)
    pipeline.load_lora_weights(checkpoint)
    num_lora = sum(parameter.numel() for name, parameter in pipeline.transformer.named_parameters() if "lora_" in name)
    lora, lora_images = score(pipeline, classifier, args.num_samples, args.seed)
    save_comparison(base_images, lora_images, work_dir / "demo_lora.png")
    real_images, real_labels = real_white_shapes(args.num_samples)
    real = {
        "white_background": white_background_share(real_images),
        "class_accuracy": accuracy(classifier, real_images, real_labels),
    }
    pipeline.unload_lora_weights()
    _, unloaded_images = score(pipeline, classifier, args.num_samples, args.seed)
    lora_file = checkpoint / "pytorch_lora_weights.safetensors"
    report = {
        "base": base,
        "lora": lora,
        "real_shapes_on_white": real,
        "unload_restores_base_bit_for_bit": bool(torch.equal(unloaded_images, base_images)),
        "lora_parameters": num_lora,
        "lora_share_of_model": num_lora / num_parameters,
        "lora_file_bytes": lora_file.stat().st_size,
        "training_seconds": round(training_seconds, 1),
        "args": vars(args),
    }
    print(json.dumps(report, indent=2))
    (work_dir / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
