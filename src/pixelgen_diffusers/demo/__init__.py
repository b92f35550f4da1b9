"""The bundled demo: a procedural shapes dataset, a small model trained on it, and the classifier that scores it."""

from pathlib import Path

from .shapes import CLASS_NAMES, make_shapes, render_shape, write_shapes_dataset


def model_dir() -> Path:
    """The demo pipeline's folder inside the package; load it with `pixelgen_diffusers.hub.load_pipeline`."""
    return Path(__file__).parent / "model"


__all__ = ["CLASS_NAMES", "make_shapes", "model_dir", "render_shape", "write_shapes_dataset"]
