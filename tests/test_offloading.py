"""Offloading as diffusers' own model and pipeline tests drive it: diffusers' group offloading (block level, leaf
level, to disk) and accelerate's sequential offload (`cpu_offload`, what `enable_sequential_cpu_offload` applies) on
both transformers. The offload hooks load a module's weights when its forward runs, so every weight must be read
through its module's forward; on the CPU the offloaded weights are meta or empty tensors until then, so a weight read
elsewhere shows as an error or garbage. Same device, same kernels: the outputs equal the plain model's bit for bit."""

import pytest
import torch
from accelerate import cpu_offload
from components import tiny_t2i_transformer, tiny_transformer


def c2i_inputs(model, batch=2):
    generator = torch.Generator().manual_seed(0)
    size = model.config.sample_size
    return (
        torch.randn(batch, 3, size, size, generator=generator),
        torch.rand(batch, generator=generator),
        torch.tensor([1, model.config.num_classes][:batch]),
    )


def t2i_inputs(model, batch=2):
    generator = torch.Generator().manual_seed(0)
    size, config = model.config.sample_size, model.config
    return (
        torch.randn(batch, 3, size, size, generator=generator),
        torch.rand(batch, generator=generator),
        torch.randn(batch, config.txt_max_length, config.txt_embed_dim, generator=generator),
    )


MODELS = {
    "c2i": (lambda: tiny_transformer(bottleneck_dim=16), c2i_inputs),
    "c2i-conv": (lambda: tiny_transformer(), c2i_inputs),
    "t2i": (lambda: tiny_t2i_transformer(), t2i_inputs),
}


def forward(model, inputs):
    with torch.no_grad():
        return model(*inputs, return_dict=False)[0]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(
    "offload",
    [
        dict(offload_type="block_level", num_blocks_per_group=1),
        dict(offload_type="leaf_level"),
        dict(offload_type="block_level", num_blocks_per_group=1, to_disk=True),
        dict(offload_type="leaf_level", to_disk=True),
    ],
    ids=["block", "leaf", "block-disk", "leaf-disk"],
)
def test_group_offloading_equals_the_plain_model(model_name, offload, tmp_path):
    make_model, make_inputs = MODELS[model_name]
    model = make_model()
    inputs = make_inputs(model)
    expected = forward(model, inputs)
    offload = dict(offload)
    if offload.pop("to_disk", False):
        offload["offload_to_disk_path"] = str(tmp_path)
    model.enable_group_offload(onload_device="cpu", offload_device="cpu", **offload)
    torch.testing.assert_close(forward(model, inputs), expected, rtol=0, atol=0)
    torch.testing.assert_close(forward(model, inputs), expected, rtol=0, atol=0)  # and again, once offloaded


@pytest.mark.parametrize("model_name", MODELS)
def test_sequential_cpu_offload_equals_the_plain_model(model_name):
    make_model, make_inputs = MODELS[model_name]
    model = make_model()
    inputs = make_inputs(model)
    expected = forward(model, inputs)
    cpu_offload(model, execution_device=torch.device("cpu"))
    assert all(parameter.device.type == "meta" for parameter in model.parameters())  # really offloaded
    torch.testing.assert_close(forward(model, inputs), expected, rtol=0, atol=0)
