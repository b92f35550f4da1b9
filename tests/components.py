"""Tiny real components shared by the tests (real classes at tiny sizes; nothing is mocked)."""

import torch

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, PixelGenTransformer2DModel


TINY_C2I = dict(
    sample_size=32,
    patch_size=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    num_classes=10,
    in_context_len=4,
    in_context_start=1,
)
TINY_ID2LABEL = {i: f"shape {i}, synonym {i}" for i in range(10)} | {3: "golden retriever, retriever"}


def tiny_transformer(seed: int = 0, bottleneck_dim: int | None = None, randomize: bool = True, **overrides):
    """A 2-block class-to-image transformer. With `randomize`, zero-initialised adaLN/output layers get random
    weights too, so that every path of the network affects the output."""
    torch.manual_seed(seed)
    model = PixelGenTransformer2DModel(**{**TINY_C2I, "bottleneck_dim": bottleneck_dim, **overrides})
    if randomize:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def tiny_c2i_pipeline(sampling_method: str = "heun", timeshift: float = 2.0, **pipeline_config):
    transformer = tiny_transformer()
    scheduler = PixelGenScheduler(sampling_method=sampling_method, timeshift=timeshift)
    pipe = PixelGenC2IPipeline(transformer, scheduler, id2label=TINY_ID2LABEL, **pipeline_config)
    pipe.set_progress_bar_config(disable=True)
    return pipe
