#!/usr/bin/env python
# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Regenerates the bundled text-to-image demo end to end: the captioned shapes dataset, the tokenizer and tiny Qwen3
text encoder, the attribute classifier, the model (trained with `pixelgen train`'s text-to-image trainer), the
GenEval-style evaluation table, the choice of default sampling settings, the README's sample grid, and the exported
folder under src/pixelgen_diffusers/demo/model_t2i.

    python scripts/make_demo_t2i_model.py        # see the README for the time it took

Rerunning resumes an interrupted training run from its last checkpoint in --work-dir. After editing the pipeline,
transformer or scheduler modules, `--refresh-code` copies the new code into the shipped folder (code files only:
configs, weights and tokenizer stay as they are; no training).
"""

import argparse
import json
import re
import time
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch

from pixelgen_diffusers.conversion.export import export_pipeline, refresh_code
from pixelgen_diffusers.demo import t2i_model_dir
from pixelgen_diffusers.demo.attribute_classifier import (
    ATTRIBUTE_CLASSIFIER_PATH,
    attribute_accuracy,
    load_attribute_classifier,
    train_attribute_classifier,
)
from pixelgen_diffusers.demo.captions import (
    T2I_EVAL_SEED,
    T2I_TRAIN_SEED,
    make_captioned_shapes,
    write_captioned_dataset,
)
from pixelgen_diffusers.demo.text_encoder import build_text_encoder, build_tokenizer
from pixelgen_diffusers.evaluation.demo_t2i import (
    DEFAULT_T2I_TABLE,
    choose_t2i_default,
    evaluate_t2i,
    format_t2i_table,
)
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.training import TrainingConfig, train


DEMO_T2I_MODEL = dict(
    patch_size=8,
    hidden_size=128,
    depth=4,
    num_heads=4,
    num_text_blocks=1,
    txt_embed_dim=32,
    txt_max_length=16,
    bottleneck_dim=64,
)
README_PROMPTS = (
    "a red star on a blue background",
    "a yellow heart against a purple background",
    "a white arrow on a green background",
    "an orange crescent on a black background",
    "a blue background with a white ring",
    "green cross, yellow background",
    "a purple diamond",
    "a circle on a red background",
)
README_GRID = Path(__file__).resolve().parents[1] / "docs" / "demo_t2i_samples.png"


def export_demo(pipeline, output_dir: Path) -> None:
    """Exports as a self-contained folder, without recording where the pipeline was loaded from. The encoder ships in
    the folder and exists nowhere else, so `text_encoder_id` (where a pipeline without one loads it) is null."""
    pipeline.register_to_config(_name_or_path="pixelgen_diffusers/demo/model_t2i", text_encoder_id=None)
    export_pipeline(pipeline, output_dir, overwrite=True)
    fix_model_card(output_dir / "README.md")


def fix_model_card(path: Path) -> None:
    """The exporter's card is written for converted upstream checkpoints; this model's weights are our own."""
    text = path.read_text().replace("a photo of a corgi wearing sunglasses", README_PROMPTS[0])
    encoder_note = (
        "The text encoder (a 2-layer, 32-wide `Qwen3Model` frozen at its random initialisation) and its tokenizer (a"
        " `Qwen2Tokenizer` whose BPE merges were trained on the caption grammar) are included (`text_encoder/`,"
        " `tokenizer/`). Prompts follow the grammar in `pixelgen_diffusers/demo/captions.py`, e.g."
        f' "{README_PROMPTS[0]}".'
    )
    included = r"The text encoder (\(`[^`]*`\) )?and its tokenizer are included \(`text_encoder/`, `tokenizer/`\)\."
    text = re.sub(included, encoder_note, text)
    title = "# pixelgen-diffusers text-to-image demo: captioned shapes at 32x32\n"
    text = re.sub(r"^# .*\n", title, text, count=1, flags=re.M)
    license_text = (
        "Code and weights are MIT-licensed (pixelgen-diffusers). The transformer was trained from scratch by"
        " `scripts/make_demo_t2i_model.py` on procedurally generated captioned shapes; the text encoder is a tiny"
        " `Qwen3Model` frozen at its random initialisation, with a byte-level BPE tokenizer trained on the caption"
        " grammar."
    )
    path.write_text(re.sub(r"## License\n\n.*?\n\n", f"## License\n\n{license_text}\n\n", text, count=1, flags=re.S))


def sample_grid(pipeline, prompts=README_PROMPTS, images_per_prompt: int = 4, scale: int = 3) -> PIL.Image.Image:
    """One row per prompt: the prompt, then `images_per_prompt` samples (seeds 0, 1, ...) upscaled `scale`x."""
    size = pipeline.transformer.config.sample_size * scale
    label_width = 300
    grid = PIL.Image.new("RGB", (label_width + images_per_prompt * (size + 4), len(prompts) * (size + 4)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for row, prompt in enumerate(prompts):
        generators = [torch.Generator().manual_seed(seed) for seed in range(images_per_prompt)]
        images = pipeline([prompt] * images_per_prompt, generator=generators).images
        top = row * (size + 4)
        draw.text((6, top + size // 2 - 6), prompt, fill="black")
        for column, image in enumerate(images):
            grid.paste(image.resize((size, size), PIL.Image.NEAREST), (label_width + column * (size + 4), top))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/pixelgen-demo-t2i", help="dataset, encoder and checkpoints")
    parser.add_argument("--output-dir", default=str(t2i_model_dir()), help="where the exported demo model goes")
    parser.add_argument("--num-images", type=int, default=20000, help="training images")
    parser.add_argument("--max-steps", type=int, default=13000, help="training steps (the shipped model: 13,000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.998)
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch threads; 1 is fastest on a busy 2-core machine (2 threads oversubscribe it)",
    )
    parser.add_argument(
        "--reuse-classifier",
        action="store_true",
        help="score with the shipped attribute classifier instead of training it again (training is deterministic)",
    )
    parser.add_argument(
        "--refresh-code",
        action="store_true",
        help="only copy the installed package's code into the shipped model (after editing the pipeline,"
        " transformer or scheduler modules); configs and weights are left as they are; no training",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    output_dir = Path(args.output_dir)
    if args.refresh_code:
        for path in refresh_code(output_dir):
            print(f"refreshed {path}")
        return
    work_dir = Path(args.work_dir)
    timings = {}

    start = time.perf_counter()
    data_dir = work_dir / "captions"
    if not (data_dir / "metadata.jsonl").is_file():
        write_captioned_dataset(data_dir, args.num_images, seed=T2I_TRAIN_SEED)
    # Frozen at its seeded random init, in float32 both here and in the shipped pipeline, so that training and
    # sampling compute the same caption features.
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer))
    timings["dataset and encoder"] = time.perf_counter() - start

    start = time.perf_counter()
    config = TrainingConfig(
        data_dir=str(data_dir),
        output_dir=str(work_dir / "run"),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        sample_size=32,
        model_config=DEMO_T2I_MODEL,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        ema_decay=args.ema_decay,
        num_workers=1,
        log_every=100,
        sample_every=1000,
        checkpoint_every=500,
        checkpoints_total_limit=2,
        resume="latest",
        sampling_method="euler",
        sampling_timeshift=1.0,
        num_inference_steps=10,
        guidance_scale=4.0,
    )
    checkpoint = train(config)
    timings["training"] = time.perf_counter() - start

    start = time.perf_counter()
    if args.reuse_classifier and ATTRIBUTE_CLASSIFIER_PATH.is_file():
        classifier = load_attribute_classifier()
        accuracy = attribute_accuracy(classifier, *make_captioned_shapes(1000, T2I_EVAL_SEED, held_out=True)[::2])
    else:
        classifier, accuracy = train_attribute_classifier()
    print(
        f"Attribute classifier on real held-out images: {json.dumps(accuracy)} (saved to {ATTRIBUTE_CLASSIFIER_PATH})"
    )
    timings["classifier"] = time.perf_counter() - start

    start = time.perf_counter()
    pipeline = PixelGenT2IPipeline.from_pretrained(checkpoint, text_encoder=text_encoder, tokenizer=tokenizer)
    pipeline.set_progress_bar_config(disable=True)
    rows = evaluate_t2i(pipeline, DEFAULT_T2I_TABLE, classifier=classifier, progress=True)
    print(format_t2i_table(rows))
    default = choose_t2i_default(rows)
    print(f"Default sampling settings: {json.dumps(default)}")
    timings["evaluation"] = time.perf_counter() - start

    pipeline.register_to_config(num_inference_steps=default["steps"], guidance_scale=default["guidance_scale"])
    pipeline.scheduler.register_to_config(sampling_method=default["method"])
    export_demo(pipeline, output_dir)
    sample_grid(pipeline).save(README_GRID)
    (work_dir / "eval_table.json").write_text(json.dumps({"rows": rows, "default": default}, indent=2))
    timings["total"] = sum(timings.values())
    print("Wall time (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))


if __name__ == "__main__":
    main()
