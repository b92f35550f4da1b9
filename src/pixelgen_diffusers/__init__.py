"""PixelGen in diffusers: pixel-space JiT transformers, PixelGen's samplers, and pipelines.

The public names load on first use (PEP 562), so that `pixelgen --help` and the CLI's argument errors do not wait
for torch and diffusers; `from pixelgen_diffusers import PixelGenC2IPipeline` works as usual.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "PIXELGEN_PRESETS": "models.transformer_jit",
    "PixelGenC2IImg2ImgPipeline": "pipelines.pipeline_pixelgen_c2i_edit",
    "PixelGenC2IInpaintPipeline": "pipelines.pipeline_pixelgen_c2i_edit",
    "PixelGenC2IPipeline": "pipelines.pipeline_pixelgen_c2i",
    "PixelGenScheduler": "schedulers.scheduling_pixelgen",
    "PixelGenT2IImg2ImgPipeline": "pipelines.pipeline_pixelgen_t2i_edit",
    "PixelGenT2IInpaintPipeline": "pipelines.pipeline_pixelgen_t2i_edit",
    "PixelGenT2IPipeline": "pipelines.pipeline_pixelgen_t2i",
    "PixelGenT2ITransformer2DModel": "models.transformer_jit_t2i",
    "PixelGenTransformer2DModel": "models.transformer_jit",
    "convert_checkpoint": "conversion.convert",
    "export_pipeline": "conversion.export",
    "imagenet_id2label": "conversion.labels",
    "load_pipeline": "conversion.hub",
    "push_to_hub": "conversion.push",
}

__all__ = [
    "PIXELGEN_PRESETS",
    "PixelGenC2IImg2ImgPipeline",
    "PixelGenC2IInpaintPipeline",
    "PixelGenC2IPipeline",
    "PixelGenScheduler",
    "PixelGenT2IImg2ImgPipeline",
    "PixelGenT2IInpaintPipeline",
    "PixelGenT2IPipeline",
    "PixelGenT2ITransformer2DModel",
    "PixelGenTransformer2DModel",
    "convert_checkpoint",
    "export_pipeline",
    "imagenet_id2label",
    "load_pipeline",
    "push_to_hub",
]

if TYPE_CHECKING:
    from .conversion.convert import convert_checkpoint
    from .conversion.export import export_pipeline
    from .conversion.hub import load_pipeline
    from .conversion.labels import imagenet_id2label
    from .conversion.push import push_to_hub
    from .models.transformer_jit import PIXELGEN_PRESETS, PixelGenTransformer2DModel
    from .models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
    from .pipelines.pipeline_pixelgen_c2i import PixelGenC2IPipeline
    from .pipelines.pipeline_pixelgen_c2i_edit import PixelGenC2IImg2ImgPipeline, PixelGenC2IInpaintPipeline
    from .pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
    from .pipelines.pipeline_pixelgen_t2i_edit import PixelGenT2IImg2ImgPipeline, PixelGenT2IInpaintPipeline
    from .schedulers.scheduling_pixelgen import PixelGenScheduler


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
