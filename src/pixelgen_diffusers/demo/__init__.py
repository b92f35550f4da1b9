"""The bundled demos: procedural shapes data (class-labelled and captioned), a small class-to-image and a small
text-to-image model trained on them, and the classifiers that score them."""

from pathlib import Path

from .shapes import CLASS_NAMES, make_shapes, render_shape, write_shapes_dataset


def model_dir() -> Path:
    """The class-to-image demo pipeline's folder inside the package; load it with
    `pixelgen_diffusers.load_pipeline`."""
    return Path(__file__).parent / "model"


def t2i_model_dir() -> Path:
    """The text-to-image demo pipeline's folder inside the package (transformer, scheduler, Qwen3 text encoder and
    tokenizer); load it with `pixelgen_diffusers.load_pipeline` or `PixelGenT2IPipeline.from_pretrained`."""
    return Path(__file__).parent / "model_t2i"


__all__ = ["CLASS_NAMES", "make_shapes", "model_dir", "render_shape", "t2i_model_dir", "write_shapes_dataset"]
