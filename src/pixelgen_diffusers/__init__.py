"""PixelGen in diffusers: pixel-space JiT transformers, PixelGen's samplers, and pipelines."""

from .labels import imagenet_id2label
from .pipeline_pixelgen_c2i import PixelGenC2IPipeline
from .pipeline_pixelgen_t2i import PixelGenT2IPipeline
from .scheduling_pixelgen import PixelGenScheduler
from .transformer_jit import PIXELGEN_PRESETS, PixelGenTransformer2DModel
from .transformer_jit_t2i import PixelGenT2ITransformer2DModel


__version__ = "0.1.0"

__all__ = [
    "PIXELGEN_PRESETS",
    "PixelGenC2IPipeline",
    "PixelGenScheduler",
    "PixelGenT2IPipeline",
    "PixelGenT2ITransformer2DModel",
    "PixelGenTransformer2DModel",
    "imagenet_id2label",
]
