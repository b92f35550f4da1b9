"""A few optimizer steps of the tiny class-to-image transformer, sharded with FSDP2 when launched on several processes
(`torchrun --nproc-per-node 2 tests/fsdp_worker.py OUT STEPS`), plain otherwise. tests/test_fsdp.py runs it both ways.

Float32, no dropout, and the data of step s fixed by s: every process takes its slice of the same global batch, so the
sharded run computes the gradient of the full batch (FSDP2 averages the slices' gradients).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from components import tiny_transformer
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from pixelgen_diffusers.training.distributed import save_sharded_checkpoint, shard_transformer
from pixelgen_diffusers.training.losses import EMA


GLOBAL_BATCH = 4


def build(sharded: bool):
    model = tiny_transformer(seed=0).train()
    ema = EMA(model, decay=0.5)
    if sharded:
        shard_transformer(model)
        shard_transformer(ema.model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    return model, optimizer, [ema]


def train_steps(model, optimizer, emas, first_step: int, last_step: int) -> None:
    rank, world_size = 0, 1
    if torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    rows = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    for step in range(first_step, last_step):
        generator = torch.Generator().manual_seed(1000 + step)
        images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=generator)
        timesteps = torch.rand(GLOBAL_BATCH, generator=generator)
        labels = torch.randint(0, 10, (GLOBAL_BATCH,), generator=generator)
        prediction = model(images[rows] * 0.5, timesteps[rows], labels[rows]).sample
        F.mse_loss(prediction, images[rows]).backward()
        optimizer.step()
        optimizer.zero_grad()
        for ema in emas:
            ema.update(model)


def full_weights(model, emas) -> dict[str, torch.Tensor]:
    """Every weight, gathered (`full_state_dict`) where sharded: the online model's and each EMA's."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = {f"model.{k}": v for k, v in get_model_state_dict(model, options=options).items()}
    for index, ema in enumerate(emas):
        weights |= {f"ema_{index}.{k}": v for k, v in get_model_state_dict(ema.model, options=options).items()}
    return weights


if __name__ == "__main__":
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    torch.distributed.init_process_group("gloo")
    world_size = torch.distributed.get_world_size()
    print(f"process {torch.distributed.get_rank()}: world size {world_size}", flush=True)
    model, optimizer, emas = build(sharded=world_size > 1)
    train_steps(model, optimizer, emas, 0, steps)
    save_sharded_checkpoint(out / "checkpoint", model, optimizer, emas)
    weights = full_weights(model, emas)
    if torch.distributed.get_rank() == 0:
        torch.save(weights, out / "weights.pt")
    torch.distributed.destroy_process_group()
