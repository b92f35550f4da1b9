"""`pixelgen convert` on other ports' folders: Bili-Sakura/JiT-diffusers (JiTPipeline / JiTTransformer2DModel) and
the BiliSakura/PixelGen-diffusers Hub layout. The folders are built here in those layouts (names and configs as
their public code and card describe them), from the tiny upstream state dicts."""

import json

import pytest
import torch
from components import (
    tiny_qwen3,
    tiny_qwen_tokenizer,
    upstream_c2i_state_dict,
    upstream_lightning_checkpoint,
    upstream_t2i_state_dict,
)
from safetensors.torch import save_file
from test_cli import assert_one_line_error, run_cli

from pixelgen_diffusers import convert_checkpoint, load_pipeline
from pixelgen_diffusers.conversion.keys import C2I_KEY_MAP
from pixelgen_diffusers.conversion.model_folder import ConversionError, read_safetensors_folder


LABELS = {str(i): f"shape {i}" for i in range(10)}


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def jit_port_folder(root, state_dict, solver="euler", pipeline=True):
    """A JiTPipeline folder: the transformer wraps JiT as `self.transformer`, so its keys are JiT's under
    `transformer.`; the config names the preset (`model_type`) and sizes; the scheduler config its solver."""
    transformer = root / "transformer" if pipeline else root
    write_json(
        transformer / "config.json",
        {
            "_class_name": "JiTTransformer2DModel",
            "_diffusers_version": "0.31.0",
            "model_type": "JiT-tiny/8",
            "sample_size": 32,
            "num_class_embeds": 10,
            "attention_dropout": 0.0,
            "dropout": 0.0,
        },
    )
    save_file(
        {f"transformer.{key}": value for key, value in state_dict.items()},
        transformer / "diffusion_pytorch_model.safetensors",
    )
    if pipeline:
        write_json(root / "scheduler" / "scheduler_config.json", {"_class_name": "JiTScheduler", "solver": solver})
        write_json(
            root / "model_index.json",
            {
                "_class_name": ["pipeline", "JiTPipeline"],
                "_diffusers_version": "0.31.0",
                "scheduler": ["scheduling_jit", "JiTScheduler"],
                "transformer": ["jit_transformer_2d", "JiTTransformer2DModel"],
                "id2label": LABELS,
            },
        )
    return root


def pixelgen_port_folder(
    root, state_dict, class_name="PixelGenC2IPipeline", transformer_class="PixelGenTransformer2DModel"
):
    """A subfolder of the BiliSakura/PixelGen-diffusers layout: pipeline.py, model_index.json (with id2label for
    class-to-image), scheduler/ and transformer/ shipping their code."""
    write_json(
        root / "model_index.json",
        {
            "_class_name": ["pipeline", class_name],
            "scheduler": ["scheduling_pixelgen", "PixelGenScheduler"],
            "transformer": ["transformer_jit", transformer_class],
            **({"id2label": LABELS} if class_name == "PixelGenC2IPipeline" else {}),
        },
    )
    (root / "pipeline.py").write_text("# the port's pipeline code (not read by the converter)\n")
    write_json(root / "scheduler" / "scheduler_config.json", {"_class_name": "PixelGenScheduler"})
    write_json(root / "transformer" / "config.json", {"_class_name": transformer_class, "in_context_start": 1})
    save_file(state_dict, root / "transformer" / "diffusion_pytorch_model.safetensors")
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny upstream weights converted from a Lightning checkpoint: what every port folder must give."""
    root = tmp_path_factory.mktemp("reference")
    state_dict = upstream_c2i_state_dict()
    torch.save(upstream_lightning_checkpoint(state_dict, state_dict), root / "model.ckpt")
    folder = convert_checkpoint(root / "model.ckpt", root / "folder", in_context_start=1)
    return state_dict, read_safetensors_folder(folder / "transformer")


def assert_same_transformer(folder, expected):
    converted = read_safetensors_folder(folder / "transformer")
    assert sorted(converted) == sorted(expected)
    assert all(torch.equal(converted[key], expected[key]) for key in expected)


def test_a_jit_diffusers_pipeline_folder_converts_with_its_solver_and_class_names(tmp_path, reference):
    state_dict, expected = reference
    port = jit_port_folder(tmp_path / "jit-port", state_dict, solver="euler")
    folder = convert_checkpoint(port, tmp_path / "out", in_context_start=1)
    assert_same_transformer(folder, expected)
    pipe = load_pipeline(folder)
    assert pipe.scheduler.config.sampling_method == "euler" and pipe.scheduler.config.timeshift == 1.0
    assert pipe.id2label[3] == "shape 3"
    metadata = json.loads((folder / "conversion_metadata.json").read_text())
    assert metadata["source"]["format"] == "JiT-diffusers"
    assert metadata["architecture_sources"]["sample_size"].startswith(("weights", "checkpoint args.img_size"))


def test_a_bare_jit_transformer_folder_converts(tmp_path, reference):
    state_dict, expected = reference
    port = jit_port_folder(tmp_path / "jit-transformer", state_dict, pipeline=False)
    assert_same_transformer(convert_checkpoint(port, tmp_path / "out", in_context_start=1), expected)


@pytest.mark.parametrize("names", ["upstream", "upstream under transformer.", "pixelgen-diffusers"])
def test_a_pixelgen_diffusers_hub_subfolder_converts_whatever_names_its_weights_use(tmp_path, reference, names):
    state_dict, expected = reference
    if names == "upstream under transformer.":
        state_dict = {f"transformer.{key}": value for key, value in state_dict.items()}
    elif names == "pixelgen-diffusers":
        state_dict = {C2I_KEY_MAP.to_diffusers(key): value for key, value in state_dict.items()}
    port = pixelgen_port_folder(tmp_path / "PixelGen-XL-16-256", state_dict)
    folder = convert_checkpoint(port, tmp_path / "out", in_context_start=1)
    assert_same_transformer(folder, expected)
    assert load_pipeline(folder).id2label[7] == "shape 7"


def test_a_pixelgen_diffusers_text_to_image_subfolder_keeps_its_text_encoder(tmp_path):
    state_dict = upstream_t2i_state_dict(txt_embed_dim=16)
    port = pixelgen_port_folder(
        tmp_path / "PixelGen-XXL-16-512-t2i", state_dict, "PixelGenT2IPipeline", "PixelGenT2ITransformer2DModel"
    )
    tiny_qwen3().save_pretrained(port / "text_encoder")
    tiny_qwen_tokenizer().save_pretrained(port / "tokenizer")
    folder = convert_checkpoint(port, tmp_path / "out")
    pipe = load_pipeline(folder)
    assert type(pipe.text_encoder).__name__ == "Qwen3Model"
    assert torch.equal(pipe.transformer.text_embedder.proj.weight, state_dict["y_embedder.proj.weight"])
    assert pipe.scheduler.config.sampling_method == "adam_lm"  # the upstream text-to-image recipe


def test_unknown_layouts_are_one_line_errors_naming_what_was_found(tmp_path, reference, capsys):
    state_dict, _ = reference
    other = pixelgen_port_folder(tmp_path / "other", state_dict, class_name="StableDiffusionPipeline")
    with pytest.raises(ConversionError, match="holds a StableDiffusionPipeline; pixelgen convert reads folders of"):
        convert_checkpoint(other, tmp_path / "out")
    renamed = {f"encoder.layer{index}": value for index, value in enumerate(state_dict.values())}
    unknown = pixelgen_port_folder(tmp_path / "unknown", renamed)
    code, _, err = run_cli(capsys, "convert", unknown, tmp_path / "out")
    assert_one_line_error(code, err, "convert", "weights under names no known layout maps")
    assert "encoder.layer0" in err
    code, _, err = run_cli(
        capsys, "convert", jit_port_folder(tmp_path / "jit", state_dict), tmp_path / "out", "--weights", "online"
    )
    assert_one_line_error(code, err, "convert", "--weights applies to checkpoints")
    assert not (tmp_path / "out").exists()
