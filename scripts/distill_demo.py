#!/usr/bin/env python
# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Distils the bundled demo models into few-step students and measures them against their teachers: the table,
the picture grids and the speeds in docs/distillation.md.

    OMP_NUM_THREADS=1 python scripts/distill_demo.py     # see docs/distillation.md for its CPU time

Class-to-image: 1-, 2- and 4-step students of the demo model (teacher recipe: Euler 10, guidance 3), scored with the
demo classifier (accuracy, Frechet distance on its features: `evaluation.demo_c2i.evaluate`). Text-to-image: a
4-step student of the text-to-image demo (Euler 25, guidance 4) distilled on the training prompts, scored
GenEval-style on the held-out prompts (`evaluation.demo_t2i.evaluate_t2i`). Speeds: images per second of every
model at its recipe, measured in turns in this one process. Rerunning resumes the distillation runs in --work-dir
and reuses their cached teacher trajectories.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenT2IPipeline
from pixelgen_diffusers.demo import model_dir, t2i_model_dir
from pixelgen_diffusers.demo.captions import caption, sample_caption, training_triples
from pixelgen_diffusers.demo.shapes import CLASS_NAMES
from pixelgen_diffusers.evaluation.demo_c2i import evaluate, format_table
from pixelgen_diffusers.evaluation.demo_t2i import evaluate_t2i, format_t2i_table
from pixelgen_diffusers.training.distill import DistillationConfig, distill
from pixelgen_diffusers.training.trainer import image_grid
from pixelgen_diffusers.utils import atomic_save_image, atomic_write_json


DOCS = Path(__file__).resolve().parent.parent / "docs"


def training_prompts(seed: int = 0) -> list[str]:
    """The text-to-image demo's training prompt distribution: two captions of every training triple, plus the
    shape-only captions (held-out combinations stay held out)."""
    rng = np.random.default_rng(seed)
    prompts = [sample_caption(triple, rng) for triple in training_triples() for _ in range(2)]
    return list(dict.fromkeys(prompts + [caption(shape) for shape in CLASS_NAMES]))


def recipe_call(pipeline) -> dict:
    return dict(num_inference_steps=pipeline.config.num_inference_steps, guidance_scale=pipeline.config.guidance_scale)


def images_per_second(pipelines: dict, make_inputs, num_images: int, repeats: int) -> dict[str, float]:
    """Each pipeline at its stored recipe on the same inputs, in turns (so load on a shared machine hits all
    alike); the best of `repeats` runs."""
    best = {name: float("inf") for name in pipelines}
    for _ in range(repeats):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            pipeline(**make_inputs(), generator=torch.Generator().manual_seed(0), output_type="latent")
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: num_images / seconds for name, seconds in best.items()}


def picture_grid(pipelines: dict, inputs: dict, path: Path) -> None:
    """One column per model, the same noise for all; rows are the conditions."""
    columns = []
    for pipeline in pipelines.values():
        columns.append(pipeline(**inputs, latents=inputs_noise(pipeline, inputs), output_type="pil").images)
    rows = len(columns[0])
    images = [column[row] for row in range(rows) for column in columns]
    atomic_save_image(image_grid([image.resize((64, 64), 0) for image in images], rows=rows), path)


def inputs_noise(pipeline, inputs) -> torch.Tensor:
    count = len(inputs.get("class_labels") or inputs.get("prompt"))
    size = pipeline.transformer.config.sample_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/pixelgen-distill-demo")
    parser.add_argument("--student-steps", type=int, nargs="+", default=[4, 2, 1], help="class-to-image students")
    parser.add_argument("--t2i-steps", type=int, default=4)
    parser.add_argument("--num-trajectories", type=int, default=2048)
    parser.add_argument(
        "--max-steps", type=int, nargs="+", default=[500, 300, 300], help="per class-to-image student, in order"
    )
    parser.add_argument("--t2i-max-steps", type=int, default=500)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--skip", choices=("c2i", "t2i"), help="leave one of the two demos out")
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    work_dir = Path(args.work_dir)
    timings, results = {}, {}

    def run_distillation(teacher, name, steps, max_steps, **extra):
        start = time.perf_counter()
        config = DistillationConfig(
            teacher=str(teacher), output_dir=str(work_dir / name), num_inference_steps=steps,
            num_trajectories=args.num_trajectories, max_steps=max_steps, batch_size=64,
            learning_rate=args.learning_rate, checkpoint_every=100, log_every=50, resume="latest", **extra,
        )  # fmt: skip
        student = distill(config, progress=False)
        timings[f"distill {name}"] = time.perf_counter() - start
        print(f"{name}: {timings[f'distill {name}']:.0f} s", flush=True)
        return student

    if args.skip != "c2i":
        teacher = PixelGenC2IPipeline.from_pretrained(model_dir())
        teacher.set_progress_bar_config(disable=True)
        students = {}
        for steps, max_steps in zip(args.student_steps, args.max_steps):
            # One trajectory cache for all students: 12 teacher steps hold the 1-, 2- and 4-step grids.
            folder = run_distillation(model_dir(), f"c2i-{steps}step", steps, max_steps, teacher_steps=12,
                                      trajectory_cache=str(work_dir / "c2i_trajectories.safetensors"))  # fmt: skip
            students[f"{steps}-step student"] = PixelGenC2IPipeline.from_pretrained(folder)
            students[f"{steps}-step student"].set_progress_bar_config(disable=True)
        start = time.perf_counter()
        rows = evaluate(teacher, [("euler", teacher.config.num_inference_steps, teacher.config.guidance_scale)])
        rows[1]["model"] = "teacher"
        for name, student in students.items():
            row = evaluate(student, [("euler", student.config.num_inference_steps, 1.0)])[1]
            rows.append(row | {"model": name})
        timings["evaluate c2i"] = time.perf_counter() - start
        models = {"teacher": teacher, **dict(sorted(students.items()))}
        labels = [index % 10 for index in range(100)]
        speeds = images_per_second(models, lambda: {"class_labels": labels}, len(labels), repeats=3)
        for row in rows[1:]:
            row["images_per_second"] = speeds[row["model"]]
        print(format_table(rows), flush=True)
        print(json.dumps(speeds), flush=True)
        picture_grid(models, {"class_labels": list(range(10))}, DOCS / "distillation_c2i.png")
        results["c2i"] = rows

    if args.skip != "t2i":
        teacher = PixelGenT2IPipeline.from_pretrained(t2i_model_dir())
        teacher.set_progress_bar_config(disable=True)
        folder = run_distillation(t2i_model_dir(), f"t2i-{args.t2i_steps}step", args.t2i_steps, args.t2i_max_steps,
                                  prompts=training_prompts())  # fmt: skip
        student = PixelGenT2IPipeline.from_pretrained(folder)
        student.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        rows = evaluate_t2i(teacher, [("euler", teacher.config.num_inference_steps, teacher.config.guidance_scale)])
        rows[1]["model"] = "teacher"
        row = evaluate_t2i(student, [("euler", args.t2i_steps, 1.0)])[1]
        rows.append(row | {"model": f"{args.t2i_steps}-step student"})
        timings["evaluate t2i"] = time.perf_counter() - start
        models = {"teacher": teacher, f"{args.t2i_steps}-step student": student}
        prompts = [caption(name) for name in CLASS_NAMES] * 5
        speeds = images_per_second(models, lambda: {"prompt": prompts}, len(prompts), repeats=3)
        for row in rows[1:]:
            row["images_per_second"] = speeds[row["model"]]
        print(format_t2i_table(rows), flush=True)
        print(json.dumps(speeds), flush=True)
        shown = ["a red star on a blue background", "a green circle", "a heart on a yellow background", "a triangle"]
        picture_grid(models, {"prompt": shown}, DOCS / "distillation_t2i.png")
        results["t2i"] = rows

    results["timings_s"] = timings
    atomic_write_json(
        work_dir / f"results-{args.skip and {'c2i': 't2i', 't2i': 'c2i'}[args.skip] or 'all'}.json", results
    )
    print(
        "Wall time on this CPU (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()),
        flush=True,
    )


if __name__ == "__main__":
    main()
