# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""Fully sharded data-parallel training (FSDP2) of the PixelGen transformers, and checkpoints that resume under
another number of processes.

DDP keeps a full copy of the weights, gradients, Adam moments and EMA on every GPU (about 20 bytes per trainable
parameter in float32, see docs/scaling.md); FSDP2 (`torch.distributed.fsdp.fully_shard`) splits them across the
processes and gathers one block's weights at a time for its forward and backward. Every transformer block (and the
text-to-image model's text-refiner blocks) is its own shard group, the rest of the model the root group. The EMA copies
are sharded the same way, so their update is a per-shard `lerp` with no communication, and the optimizer, built on the
sharded parameters, holds only its shard of the moments.

A sharded checkpoint is written with `torch.distributed.checkpoint` (one file per process plus metadata) and loaded
with resharding, so a run saved by 8 processes resumes on 4, or on 1.
"""

from pathlib import Path

import torch
from torch import nn


SHARDED_BLOCKS = ("text_refiner_blocks", "transformer_blocks")


def device_mesh(device_type: str | None = None):
    """A one-dimensional mesh over every process of the (initialised) process group, on `device_type` (default:
    cuda if available, else cpu over gloo)."""
    from torch.distributed.device_mesh import init_device_mesh

    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    return init_device_mesh(device_type, (torch.distributed.get_world_size(),))


def shard_transformer(transformer: nn.Module, mesh=None, **fsdp_options) -> nn.Module:
    """Applies `fully_shard` to every block of `transformer` (`transformer_blocks`, and `text_refiner_blocks` for
    text-to-image) and then to the whole model, in place; returns it. `fsdp_options` go to `fully_shard` (e.g.
    `mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16)`)."""
    from torch.distributed.fsdp import fully_shard

    mesh = mesh if mesh is not None else device_mesh()
    blocks = [block for name in SHARDED_BLOCKS for block in getattr(transformer, name, [])]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has none of {SHARDED_BLOCKS}: not a PixelGen transformer")
    for block in blocks:
        fully_shard(block, mesh=mesh, **fsdp_options)
    fully_shard(transformer, mesh=mesh, **fsdp_options)
    return transformer


def _checkpoint_state(model: nn.Module, optimizer, emas: list) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    for index, ema in enumerate(emas):
        state[f"ema_{index}"] = get_model_state_dict(ema.model)
    return state


def save_sharded_checkpoint(folder: str | Path, model: nn.Module, optimizer, emas: list = ()) -> None:
    """Writes the online weights, the optimizer's state and every EMA of a sharded (or plain) model into `folder`
    with `torch.distributed.checkpoint`: each process writes its own shards. Every process must call it."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_checkpoint_state(model, optimizer, list(emas)), checkpoint_id=str(folder))


def load_sharded_checkpoint(folder: str | Path, model: nn.Module, optimizer, emas: list = ()) -> None:
    """Restores what `save_sharded_checkpoint` wrote, resharded for this run's processes (any number, one included:
    without a process group the checkpoint loads into a plain model). Every process must call it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    emas = list(emas)
    state = _checkpoint_state(model, optimizer, emas)
    dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    for index, ema in enumerate(emas):
        set_model_state_dict(ema.model, state[f"ema_{index}"])
