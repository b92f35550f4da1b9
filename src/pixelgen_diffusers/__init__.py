"""PixelGen in diffusers: pixel-space JiT transformers, PixelGen's samplers, and pipelines."""

from .convert import convert_checkpoint
from .export import export_pipeline
from .hub import load_pipeline
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
    "convert_checkpoint",
    "export_pipeline",
    "imagenet_id2label",
    "load_pipeline",
]
