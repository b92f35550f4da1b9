"""PixelGen in diffusers: pixel-space JiT transformers, PixelGen's samplers, and pipelines.

The public names load on first use (PEP 562), so that `pixelgen --help` and the CLI's argument errors do not wait
for torch and diffusers; `from pixelgen_diffusers import PixelGenC2IPipeline` works as usual.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "PIXELGEN_PRESETS": "transformer_jit",
    "PixelGenC2IPipeline": "pipeline_pixelgen_c2i",
    "PixelGenScheduler": "scheduling_pixelgen",
    "PixelGenT2IPipeline": "pipeline_pixelgen_t2i",
    "PixelGenT2ITransformer2DModel": "transformer_jit_t2i",
    "PixelGenTransformer2DModel": "transformer_jit",
    "convert_checkpoint": "convert",
    "export_pipeline": "export",
    "imagenet_id2label": "labels",
    "load_pipeline": "hub",
}

__all__ = [
    "PIXELGEN_PRESETS",
    "PixelGenC2IPipeline",
    "PixelGenScheduler",
    "PixelGenT2IPipeline",
    "PixelGenT2ITransformer2DModel",
    "PixelGenTransformer2DModel",
    "convert_checkpoint",
    "export_pipeline",
    "imagenet_id2label",
    "load_pipeline",
]

if TYPE_CHECKING:
    from .convert import convert_checkpoint
    from .export import export_pipeline
    from .hub import load_pipeline
    from .labels import imagenet_id2label
    from .pipeline_pixelgen_c2i import PixelGenC2IPipeline
    from .pipeline_pixelgen_t2i import PixelGenT2IPipeline
    from .scheduling_pixelgen import PixelGenScheduler
    from .transformer_jit import PIXELGEN_PRESETS, PixelGenTransformer2DModel
    from .transformer_jit_t2i import PixelGenT2ITransformer2DModel


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
