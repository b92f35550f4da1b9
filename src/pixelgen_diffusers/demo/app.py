# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen demo`: a Gradio app for any PixelGen model folder, offline, on the bundled demo model by default.

The app shows what the sampler does: PixelGen predicts the clean image at every model evaluation, and the pipelines
hand that prediction to step-end callbacks (`pred_original_sample`), so the app streams it while sampling runs and
keeps it as a strip beside each result. Images are seeded as `pixelgen generate` seeds them (image i of a class or
prompt uses `seed + i`), so the command the app shows reproduces its images.

Gradio is an optional dependency (`pip install "pixelgen-diffusers[demo]"`); this module imports it only when an app
is built, so that the rest of the package, and `pixelgen --help`, work without it.
"""

import argparse
import math
import queue
import random
import shlex
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import PIL.Image
import PIL.ImageChops
import torch

from ..cli.generate import class_ids, plan_images
from ..schedulers.scheduling_pixelgen import SAMPLING_METHODS
from ..utils import is_text_to_image, one_line


INSTALL_HINT = 'the demo needs Gradio: pip install "pixelgen-diffusers[demo]"'
MAX_IMAGES = 8
MAX_SEED = 2**32 - 1
MAX_STEPS = 250
# The trajectory strip shows at most this many evaluations (evenly spaced, always the last), each FRAME_SIZE pixels.
MAX_TRAJECTORY_FRAMES = 12
FRAME_SIZE = 128
# Seconds between two trajectory pictures sent to the page while sampling runs.
STREAM_INTERVAL = 0.25
# Small models' images are shown enlarged: keep their pixels sharp.
PAGE_CSS = "#gallery img, #trajectory img { image-rendering: pixelated; }"


# Run folders of generated PNGs kept in the app's folder (older ones are deleted; the page shows Gradio's copies).
KEPT_RUNS = 16


def import_gradio():
    """Gradio, or an ImportError whose one line says what to install."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({one_line(error, 80)})") from error
    return gradio


@dataclass
class SamplingSettings:
    """What one run of the app uses besides its classes or prompts; names follow the pipelines' arguments."""

    num_images: int
    seed: int
    sampling_method: str
    num_inference_steps: int
    guidance_scale: float
    guidance_interval_min: float
    guidance_interval_max: float
    timeshift: float


@dataclass
class Result:
    """A finished run: the PNG files (named as `pixelgen generate` names them), their captions, the trajectory (one
    row per image), the equivalent command and the settings."""

    paths: list[Path]
    captions: list[str]
    trajectory: PIL.Image.Image | None
    command: str
    settings: dict


class PixelGenDemo:
    """The app's logic, independent of Gradio: the model's recipe and valid ranges, input checks, sampling with the
    per-evaluation clean-image predictions, and the equivalent `pixelgen generate` command.

    Args:
        pipeline: a loaded `PixelGenC2IPipeline` or `PixelGenT2IPipeline`.
        model: how the command line names the model (folder or Hub id); None for the bundled demo model (the
            default of `pixelgen generate`).
        dtype: the `--dtype` name the pipeline was loaded with, for the command.
    """

    def __init__(self, pipeline, model: str | None = None, dtype: str = "float32"):
        self.pipeline = pipeline
        self.model = model
        self.dtype = dtype
        self.text_to_image = is_text_to_image(pipeline)
        self.sample_size = pipeline.transformer.config.sample_size
        # The scheduler keeps per-run state: one run at a time, whoever calls (the Gradio queue also serialises).
        self._lock = threading.Lock()
        output_dir = tempfile.TemporaryDirectory(prefix="pixelgen-demo-")
        self.output_dir = Path(output_dir.name)
        weakref.finalize(self, output_dir.cleanup)
        self._runs: list[Path] = []  # the run folders in output_dir, oldest first

    # ------------------------------------------------------------------------------------------ recipe and choices
    def recipe(self) -> SamplingSettings:
        """The folder's stored sampling recipe (pipeline and scheduler configs): the app's defaults."""
        config, scheduler_config = self.pipeline.config, self.pipeline.scheduler.config
        return SamplingSettings(
            num_images=1,
            seed=0,
            sampling_method=scheduler_config.sampling_method,
            num_inference_steps=int(config.num_inference_steps),
            guidance_scale=float(config.guidance_scale),
            guidance_interval_min=float(config.guidance_interval_min),
            guidance_interval_max=float(config.guidance_interval_max),
            timeshift=float(scheduler_config.timeshift),
        )

    def limits(self) -> dict[str, tuple[float, float]]:
        """Valid (minimum, maximum) per setting; the maxima also cover the recipe's values."""
        recipe = self.recipe()
        return {
            "num_images": (1, MAX_IMAGES),
            "seed": (0, MAX_SEED - MAX_IMAGES),
            "num_inference_steps": (1, max(MAX_STEPS, recipe.num_inference_steps)),
            "guidance_scale": (0.0, max(10.0, recipe.guidance_scale)),
            "guidance_interval_min": (0.0, 1.0),
            "guidance_interval_max": (0.0, 1.0),
            "timeshift": (0.1, max(10.0, recipe.timeshift)),
        }

    def class_choices(self) -> list[tuple[str, str]]:
        """(shown text, value) per class: all synonyms and the id are shown, so typing any of them finds it."""
        return [(f"{names} ({class_id})", str(class_id)) for class_id, names in sorted(self.pipeline.id2label.items())]

    def class_name(self, class_id: int) -> str:
        return self.pipeline.id2label.get(class_id, str(class_id)).split(",")[0].strip()

    # ------------------------------------------------------------------------------------------------------ checks
    def check_settings(self, settings: SamplingSettings) -> None:
        """ValueError naming the setting, its value and what is accepted; before any work."""
        if settings.sampling_method not in SAMPLING_METHODS:
            raise ValueError(
                f"sampler {settings.sampling_method!r} is unknown; accepted: {', '.join(SAMPLING_METHODS)}"
            )
        for name, (low, high) in self.limits().items():
            value = getattr(settings, name)
            if value is None or not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"{name.replace('_', ' ')} must be a number in [{low}, {high}], got {value}")
            if name in ("num_images", "seed", "num_inference_steps") and value != int(value):
                raise ValueError(f"{name.replace('_', ' ')} must be a whole number, got {value}")
        if settings.guidance_interval_min > settings.guidance_interval_max:
            raise ValueError(
                f"guidance interval: the start ({settings.guidance_interval_min}) must not exceed the end"
                f" ({settings.guidance_interval_max})"
            )

    def conditions(self, entries: list[str] | str | None) -> list:
        """Class ids (picked, or typed as names or ids) or prompts, checked; ValueError otherwise."""
        if isinstance(entries, str):
            entries = [entries]
        entries = [entry.strip() for entry in entries or [] if entry and entry.strip()]
        if self.text_to_image:
            if not entries:
                raise ValueError("prompt is empty: describe the image to generate")
            return entries
        if not entries:
            raise ValueError("no class chosen: type part of a class name and pick it from the list")
        return class_ids(self.pipeline, entries)

    # ----------------------------------------------------------------------------------------------------- command
    def command(self, conditions: list, settings: SamplingSettings, negative_prompt: str | None = None) -> str:
        """The `pixelgen generate` command that writes the same images (class names where they are unambiguous)."""
        arguments = ["pixelgen", "generate"]
        if self.model is not None:
            arguments += ["--model", self.model]
        for condition in conditions:
            if self.text_to_image:
                arguments += ["--prompt", condition]
            else:
                name = self.class_name(condition)
                unambiguous = self.pipeline.labels.get(name) == condition
                arguments += ["--class", name if unambiguous else str(condition)]
        if negative_prompt:
            arguments += ["--negative-prompt", negative_prompt]
        arguments += [
            "--num-images", str(settings.num_images),
            "--seed", str(settings.seed),
            "--sampler", settings.sampling_method,
            "--steps", str(settings.num_inference_steps),
            "--guidance-scale", f"{settings.guidance_scale:g}",
            "--guidance-interval", f"{settings.guidance_interval_min:g}", f"{settings.guidance_interval_max:g}",
            "--timeshift", f"{settings.timeshift:g}",
        ]  # fmt: skip
        arguments += ["--dtype", self.dtype]  # always: generate's default depends on the device
        return shlex.join(arguments)

    # ---------------------------------------------------------------------------------------------------- sampling
    def generate(
        self, entries, settings: SamplingSettings, negative_prompt: str | None = None
    ) -> Iterator[tuple[int, int, PIL.Image.Image] | Result]:
        """Checks everything, then samples. Yields `(evaluation, num_evaluations, trajectory so far)` after every
        model evaluation, then the `Result`. Closing the iterator early stops the sampling."""
        self.check_settings(settings)
        conditions = self.conditions(entries)
        if negative_prompt and not self.text_to_image:
            raise ValueError("a negative prompt needs a text-to-image model")
        whole_numbers = ("num_images", "seed", "num_inference_steps")
        settings = replace(settings, **{name: int(getattr(settings, name)) for name in whole_numbers})
        plan = argparse.Namespace(
            classes=None if self.text_to_image else [str(condition) for condition in conditions],
            prompts=conditions if self.text_to_image else None,
            num_images=settings.num_images,
            seed=settings.seed,
        )
        jobs = plan_images(self.pipeline, plan, self.text_to_image)

        events = queue.Queue()
        stop = threading.Event()
        # Folders converted by older versions run their own pipeline code, which may not pass the prediction.
        watched = [name for name in ("pred_original_sample",) if name in self.pipeline._callback_tensor_inputs]

        def on_step_end(pipeline, index, timestep, tensors):
            if stop.is_set():
                pipeline._interrupt = True  # diffusers' way to end a run from a callback
            prediction = tensors["pred_original_sample"].cpu() if watched else None
            events.put(("step", index, pipeline.num_timesteps, prediction))
            return {}

        def sample():
            condition = [job["condition"] for job in jobs]
            try:
                with self._lock:
                    output = self.pipeline(
                        **({"prompt": condition} if self.text_to_image else {"class_labels": condition}),
                        **({"negative_prompt": negative_prompt} if negative_prompt else {}),
                        generator=[torch.Generator("cpu").manual_seed(job["seed"]) for job in jobs],
                        num_inference_steps=settings.num_inference_steps,
                        guidance_scale=settings.guidance_scale,
                        guidance_interval_min=settings.guidance_interval_min,
                        guidance_interval_max=settings.guidance_interval_max,
                        sampling_method=settings.sampling_method,
                        timeshift=settings.timeshift,
                        output_type="pil",
                        callback_on_step_end=on_step_end,
                        callback_on_step_end_tensor_inputs=watched,
                    )
                events.put(("done", output.images))
            except Exception as error:  # shown to the user; the app carries on
                events.put(("error", error))

        worker = threading.Thread(target=sample, name="pixelgen-demo-sampling", daemon=True)
        worker.start()
        frames = [[] for _ in jobs]
        try:
            while True:
                event = events.get()
                if event[0] == "error":
                    raise RuntimeError(f"sampling failed: {one_line(event[1])}") from event[1]
                if event[0] == "done":
                    images = event[1]
                    break
                _, index, num_evaluations, prediction = event
                if prediction is not None:
                    for image_frames, frame in zip(frames, self.pipeline.postprocess(prediction, "pil")):
                        image_frames.append(self.trajectory_frame(frame))
                yield index + 1, num_evaluations, self.trajectory_image(frames)
        finally:
            stop.set()
            worker.join()

        # A fresh private folder per run: its files are handed out only once all are written. Gradio serves copies
        # from its own cache (which `delete_cache` empties), so only the last KEPT_RUNS runs stay here: a server
        # that runs for weeks does not fill the disk.
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.output_dir))
        self._runs.append(run_dir)
        while len(self._runs) > KEPT_RUNS:
            shutil.rmtree(self._runs.pop(0), ignore_errors=True)
        paths, captions = [], []
        for job, image in zip(jobs, images):
            path = run_dir / job["file_name"]
            image.save(path, format="PNG")
            paths.append(path)
            label = job["condition"] if self.text_to_image else self.class_name(job["condition"])
            captions.append(f"{label} · seed {job['seed']}")
        yield Result(
            paths=paths,
            captions=captions,
            trajectory=self.trajectory_image(frames),
            command=self.command(conditions, settings, negative_prompt),
            settings={"model": self.model or "bundled demo model", **asdict(settings)},
        )

    @staticmethod
    def trajectory_frame(image: PIL.Image.Image) -> PIL.Image.Image:
        """An image at FRAME_SIZE px; small models' images are enlarged without smoothing, so their pixels show."""
        resample = PIL.Image.NEAREST if image.width < FRAME_SIZE else PIL.Image.LANCZOS
        return image.resize((FRAME_SIZE, FRAME_SIZE), resample)

    @staticmethod
    def trajectory_image(frames: list[list[PIL.Image.Image]]) -> PIL.Image.Image | None:
        """One row per image: up to MAX_TRAJECTORY_FRAMES of its frames, evenly spaced and always with the latest,
        left to right; None without frames."""
        num_frames = len(frames[0])
        if num_frames == 0:
            return None
        count = min(num_frames, MAX_TRAJECTORY_FRAMES)
        picked = [round(k * (num_frames - 1) / max(count - 1, 1)) for k in range(count)]
        pitch = FRAME_SIZE + 4
        grid = PIL.Image.new("RGB", (count * pitch - 4, len(frames) * pitch - 4), "white")
        for row, image_frames in enumerate(frames):
            for column, index in enumerate(picked):
                grid.paste(image_frames[index], (column * pitch, row * pitch))
        return grid


def build_app(pipeline, model: str | None = None, dtype: str = "float32"):
    """The Gradio app (a queued `gradio.Blocks`) for a loaded PixelGen pipeline: a class-to-image tab for
    class-to-image models, a text-to-image tab for text-to-image ones. Serve it with `launch_app` (localhost by
    default).

    Args:
        pipeline: a `PixelGenC2IPipeline` or `PixelGenT2IPipeline`, already on its device.
        model: how `pixelgen generate --model` names this model in the command the app shows (None: bundled demo).
        dtype: the `--dtype` the pipeline was loaded with, for that command.

    Raises:
        ImportError: Gradio is not installed (the message says what to install).
    """
    gr = import_gradio()
    demo = PixelGenDemo(pipeline, model=model, dtype=dtype)
    recipe, limits = demo.recipe(), demo.limits()
    size = demo.sample_size
    model_name = model or "the bundled demo model"

    with gr.Blocks(title="PixelGen", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        app.pixelgen_demo = demo
        kind = "text-to-image" if demo.text_to_image else f"class-to-image, {len(pipeline.id2label)} classes"
        gr.Markdown(
            f"# PixelGen\nPixel-space diffusion: no VAE, the network predicts the clean image at every step.  \n"
            f"Model: `{model_name}` ({kind}), {size}x{size} pixels (the size it was trained for)."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                if demo.text_to_image:
                    with gr.Tab("Text to image"):
                        condition = gr.Textbox(label="Prompt", lines=2, elem_id="prompt")
                        negative_prompt = gr.Textbox(label="Negative prompt", elem_id="negative-prompt")
                else:
                    with gr.Tab("Class to image"):
                        condition = gr.Dropdown(
                            choices=demo.class_choices(),
                            multiselect=True,
                            allow_custom_value=True,
                            filterable=True,
                            label="Classes",
                            info="Type any part of a class name (every synonym works) or an id, and pick.",
                            elem_id="class-picker",
                        )
                        negative_prompt = gr.State(None)
                num_images = gr.Slider(
                    *limits["num_images"], value=1, step=1, label="Images per class or prompt", elem_id="num-images"
                )
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=limits["seed"][1], label="Seed")
                    random_seed = gr.Checkbox(value=False, label="Random seed", elem_id="random-seed")
                sampler = gr.Radio(list(SAMPLING_METHODS), value=recipe.sampling_method, label="Sampler")
                steps = gr.Slider(
                    *limits["num_inference_steps"], value=recipe.num_inference_steps, step=1, label="Steps"
                )
                guidance_scale = gr.Slider(
                    *limits["guidance_scale"], value=recipe.guidance_scale, step=0.05, label="Guidance scale",
                    info="1 = no guidance",
                )  # fmt: skip
                with gr.Row():
                    interval_min = gr.Slider(
                        0, 1, value=recipe.guidance_interval_min, step=0.01, label="Guidance interval start"
                    )
                    interval_max = gr.Slider(
                        0, 1, value=recipe.guidance_interval_max, step=0.01, label="Guidance interval end"
                    )
                timeshift = gr.Slider(
                    *limits["timeshift"], value=recipe.timeshift, step=0.05, label="Timeshift",
                    info="> 1 spends more steps near the noise",
                )  # fmt: skip
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3, min_width=320):
                status = gr.Markdown(
                    "Pick a class and press Generate." if not demo.text_to_image else "", elem_id="status"
                )
                gallery = gr.Gallery(
                    label="Results",
                    columns=4,
                    height=210,
                    object_fit="contain",
                    fit_columns=False,
                    format="png",
                    elem_id="gallery",
                )
                trajectory = gr.Image(
                    label="Predicted clean image during sampling (left: first evaluation, right: last; a row per "
                    "image)",
                    type="pil",
                    format="png",
                    interactive=False,
                    elem_id="trajectory",
                )
                command = gr.Code(
                    label="The same images from the command line",
                    language="shell",
                    lines=2,
                    max_lines=4,
                    wrap_lines=True,
                    elem_id="command",
                )
                downloads = gr.Files(label="PNG files", elem_id="downloads", interactive=False)
                settings_view = gr.JSON(label="Settings", elem_id="settings")

        def choose_seed(seed_value, randomize):
            """A fresh random seed when asked for one, shown in the seed box before the run uses it."""
            return random.randint(0, limits["seed"][1]) if randomize else seed_value

        def run(entries, negative, count, seed_value, method, num_steps, scale, low, high, shift,
                progress=gr.Progress()):  # fmt: skip
            settings = SamplingSettings(count, seed_value, method, num_steps, scale, low, high, shift)
            last_shown = -math.inf
            try:
                for update in demo.generate(entries, settings, negative_prompt=negative):
                    if isinstance(update, Result):
                        yield (
                            list(zip(map(str, update.paths), update.captions)),
                            update.trajectory,
                            update.command,
                            [str(path) for path in update.paths],
                            update.settings,
                            f"Done: {len(update.paths)} image(s), seed {update.settings['seed']}.",
                        )
                        return
                    evaluation, num_evaluations, trajectory_so_far = update
                    progress((evaluation, num_evaluations), desc="sampling", unit="evaluations")
                    if time.monotonic() - last_shown < STREAM_INTERVAL:
                        continue  # large models take many evaluations: send the page a few pictures a second
                    last_shown = time.monotonic()
                    yield (
                        gr.skip(), trajectory_so_far, gr.skip(), gr.skip(), gr.skip(),
                        f"Sampling: model evaluation {evaluation} of {num_evaluations}",
                    )  # fmt: skip
            except (ValueError, RuntimeError) as error:
                # In the page, where the user looks (the status line and a toast); the app carries on.
                yield (gr.skip(),) * 5 + (f"**Error:** {one_line(error, None)}",)
                raise gr.Error(one_line(error, None), print_exception=False) from None

        generate.click(
            choose_seed, inputs=[seed, random_seed], outputs=seed, queue=False, api_name="choose_seed"
        ).then(
            run,
            inputs=[condition, negative_prompt, num_images, seed, sampler, steps, guidance_scale, interval_min,
                    interval_max, timeshift],
            outputs=[gallery, trajectory, command, downloads, settings_view, status],
            show_progress_on=[gallery],  # the status line, the error and the earlier results stay readable
            concurrency_limit=1,
            api_name="generate",
        )  # fmt: skip
        add_edit_tab(gr, demo, gallery)
    return app.queue(default_concurrency_limit=1)


# ------------------------------------------------------------------------------------------------------ editing
def edit_pipeline(demo: PixelGenDemo, inpaint: bool):
    """The demo pipeline's editing twin (inpainting with a mask, image-to-image without), sharing its weights."""
    from .. import (
        PixelGenC2IImg2ImgPipeline,
        PixelGenC2IInpaintPipeline,
        PixelGenT2IImg2ImgPipeline,
        PixelGenT2IInpaintPipeline,
    )

    cache = demo.__dict__.setdefault("_edit_pipelines", {})
    if inpaint not in cache:
        if demo.text_to_image:
            cls = PixelGenT2IInpaintPipeline if inpaint else PixelGenT2IImg2ImgPipeline
        else:
            cls = PixelGenC2IInpaintPipeline if inpaint else PixelGenC2IImg2ImgPipeline
        cache[inpaint] = cls.from_pipe(demo.pipeline)
        cache[inpaint].set_progress_bar_config(disable=True)
    return cache[inpaint]


def editor_image_and_mask(value) -> tuple[PIL.Image.Image, PIL.Image.Image | None]:
    """The image (the editor's background, as RGB) and the mask drawn over it (white where any layer has paint;
    None when nothing is drawn) from a Gradio ImageEditor value."""
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        raise ValueError("no image to edit: upload one, or take the first generated image")
    background = background.convert("RGB")
    mask = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        mask = alpha if mask is None else PIL.ImageChops.lighter(mask, alpha)
    if mask is not None and mask.getbbox() is None:
        mask = None  # layers without paint: nothing drawn
    return background, mask


def edit_image(demo: PixelGenDemo, value, entry, strength: float, eta: float, seed: float) -> PIL.Image.Image:
    """One edit of the editor's image with the demo's model: inpainting of the painted pixels, or image-to-image of
    the whole image when nothing is painted. ValueError for bad input, before any work."""
    image, mask = editor_image_and_mask(value)
    condition = demo.conditions(entry)[:1]
    if seed is None or not math.isfinite(seed) or seed != int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {seed}")
    pipeline = edit_pipeline(demo, inpaint=mask is not None)
    options = {"mask_image": mask} if mask is not None else {}
    with demo._lock:
        output = pipeline(
            **({"prompt": condition} if demo.text_to_image else {"class_labels": condition}),
            image=image, strength=strength, eta=eta, generator=torch.Generator("cpu").manual_seed(int(seed)),
            **options,
        )  # fmt: skip
    return output.images[0]


def first_gallery_image(items) -> PIL.Image.Image:
    """The first image of a Gradio Gallery value ((path, caption) pairs, or dicts), for the editor."""
    if not items:
        raise ValueError("no generated image yet: generate one first")
    item = items[0]
    item = item[0] if isinstance(item, (list, tuple)) else item
    if isinstance(item, dict):
        item = (item.get("image") or item).get("path")
    return PIL.Image.open(item).convert("RGB")


def add_edit_tab(gr, demo: PixelGenDemo, gallery) -> None:
    """The Edit tab (built inside the app's Blocks): upload an image or take the first generated one, paint the
    pixels to repaint, set strength and eta, and edit towards a class or prompt."""
    from ..pipelines.pixelgen_editing import DEFAULT_ETA

    size = demo.sample_size
    with gr.Tab("Edit"):
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                editor = gr.ImageEditor(
                    type="pil", image_mode="RGBA", format="png", sources=("upload", "clipboard"), height=360,
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=max(1, size // 8)),
                    transforms=(), label=f"Image ({size}x{size}) and the pixels to repaint (paint them)",
                    elem_id="edit-editor",
                )  # fmt: skip
                take = gr.Button("Take the first generated image", elem_id="edit-take")
                if demo.text_to_image:
                    entry = gr.Textbox(label="Prompt", lines=2, elem_id="edit-prompt")
                else:
                    entry = gr.Dropdown(
                        choices=demo.class_choices(), value=None, allow_custom_value=True, filterable=True,
                        label="Class", info="The class to paint (type part of its name, pick)", elem_id="edit-class",
                    )  # fmt: skip
                strength = gr.Slider(
                    0, 1, value=1.0, step=0.05, label="Strength", elem_id="edit-strength",
                    info="0 keeps the image, 1 repaints from noise; without painted pixels the whole image changes",
                )  # fmt: skip
                eta = gr.Slider(
                    0, 1, value=DEFAULT_ETA, step=0.05, label="Eta", elem_id="edit-eta",
                    info="fresh noise mixed in at every step (0: deterministic)",
                )  # fmt: skip
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="edit-seed")
                run_button = gr.Button("Edit", variant="primary", elem_id="edit-run")
            with gr.Column(scale=3, min_width=320):
                status = gr.Markdown("", elem_id="edit-status")
                result = gr.Image(
                    label="Edited image", type="pil", format="png", interactive=False, height=360,
                    elem_id="edit-result",
                )  # fmt: skip

        def take_first(items):
            try:
                image = first_gallery_image(items)
            except (ValueError, OSError) as error:
                raise gr.Error(one_line(error, None), print_exception=False) from None
            return {"background": image, "layers": [], "composite": image}

        def run(value, chosen, strength_value, eta_value, seed_value):
            try:
                edited = edit_image(demo, value, chosen, strength_value, eta_value, seed_value)
            except (ValueError, RuntimeError) as error:
                yield gr.skip(), f"**Error:** {one_line(error, None)}"
                raise gr.Error(one_line(error, None), print_exception=False) from None
            yield edited, f"Done: edited with strength {strength_value:g}, eta {eta_value:g}, seed {int(seed_value)}."

        take.click(take_first, inputs=gallery, outputs=editor, api_name="edit_take")
        run_button.click(
            run, inputs=[editor, entry, strength, eta, seed], outputs=[result, status], concurrency_limit=1,
            api_name="edit",
        )  # fmt: skip


def launch_app(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
    """Serves the app on http://host:port with system fonts (no font downloads, so it works offline)."""
    gr = import_gradio()
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=quiet,
        theme=theme,
        css=PAGE_CSS,
        footer_links=[],
        show_error=True,
    )
