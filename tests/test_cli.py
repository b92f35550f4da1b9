"""The `pixelgen` command line: generate, convert, export; one-line errors with exit code 2."""

import argparse
import functools
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from components import (
    run_python,
    tiny_c2i_pipeline,
    tiny_t2i_pipeline,
    upstream_c2i_state_dict,
    upstream_c2i_yaml,
    upstream_jit_checkpoint,
    upstream_lightning_checkpoint,
)

from pixelgen_diffusers import cli
from pixelgen_diffusers.utils import default_dtype


@pytest.fixture
def model_folder(tmp_path):
    """The tiny pipeline (2-step Heun by default) saved as a self-contained folder; returns (pipe, folder)."""
    pipe = tiny_c2i_pipeline(num_inference_steps=2, guidance_scale=2.0, guidance_interval_min=0.1)
    pipe.save_pretrained(tmp_path / "saved")
    assert cli.main(["export", str(tmp_path / "saved"), str(tmp_path / "model")]) == 0
    return pipe, tmp_path / "model"


def run_cli(capsys, *argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, command, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pixelgen {command}: error: "), err
    assert fragment in lines[0]
    assert "Traceback" not in err


def pixels(path):
    return np.asarray(PIL.Image.open(path))


def pixels_of(image):
    return np.asarray(image).astype(int)


def assert_same_image(path, expected):
    """Equal up to one uint8 level: float rounding between two model instances (or batch sizes) may differ."""
    difference = np.abs(pixels(path).astype(int) - np.asarray(expected).astype(int))
    assert difference.max() <= 1


# ---------------------------------------------------------------------------------------------------------- generate
def test_generate_writes_one_png_per_class_and_seed_equal_to_a_pipeline_call_with_that_seed(
    tmp_path, capsys, model_folder
):
    pipe, folder = model_folder
    out = tmp_path / "images"
    code, stdout, _ = run_cli(
        capsys, "generate", "--model", folder, "--class", "golden retriever", "--class", "5",
        "--num-images", "2", "--seed", "10", "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert code == 0
    names = [
        "3-golden_retriever-seed10.png",
        "3-golden_retriever-seed11.png",
        "5-shape_5-seed10.png",
        "5-shape_5-seed11.png",
    ]
    assert sorted(path.name for path in out.iterdir()) == names
    assert str(out) in stdout and all(name in stdout for name in names)

    # Each file is the image a direct call makes with one generator seeded with the file's seed (model defaults).
    for name, label, seed in (("3-golden_retriever-seed11.png", 3, 11), ("5-shape_5-seed10.png", 5, 10)):
        expected = pipe(class_labels=[label], generator=torch.Generator().manual_seed(seed)).images[0]
        assert_same_image(out / name, expected)


def test_generate_results_do_not_depend_on_the_batch_size(tmp_path, capsys, model_folder):
    _, folder = model_folder
    arguments = ["generate", "--model", folder, "--class", "7", "--num-images", "3", "--device", "cpu"]
    assert run_cli(capsys, *arguments, "--batch-size", "1", "--out", tmp_path / "one")[0] == 0
    assert run_cli(capsys, *arguments, "--batch-size", "3", "--out", tmp_path / "three")[0] == 0
    for seed in range(3):
        name = f"7-shape_7-seed{seed}.png"
        assert_same_image(tmp_path / "one" / name, pixels(tmp_path / "three" / name))


def test_generate_overrides_steps_guidance_and_sampler(tmp_path, capsys, model_folder):
    pipe, folder = model_folder
    arguments = ["--steps", "3", "--guidance-scale", "1.5", "--sampler", "euler", "--seed", "4", "--timeshift", "1.5"]
    arguments += ["--guidance-interval", "0.3", "0.8"]
    code, _, _ = run_cli(capsys, "generate", "--model", folder, "--class", "2", *arguments, "--out", tmp_path / "o")
    assert code == 0
    settings = dict(
        num_inference_steps=3,
        guidance_scale=1.5,
        sampling_method="euler",
        timeshift=1.5,
        guidance_interval_min=0.3,
        guidance_interval_max=0.8,
    )
    expected = pipe(class_labels=[2], generator=torch.Generator().manual_seed(4), **settings).images[0]
    # Every override matters: the model's defaults (2-step Heun, shift 2, interval (0.1, 1]) give another image.
    for name in ("timeshift", "guidance_interval_min"):
        other = pipe(class_labels=[2], generator=torch.Generator().manual_seed(4), **{**settings, name: None})
        assert np.abs(pixels_of(other.images[0]) - pixels_of(expected)).max() > 1
    assert_same_image(tmp_path / "o/2-shape_2-seed4.png", expected)


@pytest.mark.parametrize("mode", ["blocks", "model"])
def test_generate_compile_gives_the_eager_images_with_bounded_graphs(
    tmp_path, capsys, model_folder, monkeypatch, mode
):
    """`--compile` (blocks by default) through the real torch.compile; only its backend is swapped for Dynamo's
    "eager" one, since Inductor's C++ build would take minutes here."""
    from torch._dynamo.utils import counters

    _, folder = model_folder
    arguments = ["generate", "--model", folder, "--class", "7", "--class", "2", "--device", "cpu", "--batch-size", "1"]
    assert run_cli(capsys, *arguments, "--out", tmp_path / "eager")[0] == 0
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    compile_arguments = ["--compile"] if mode == "blocks" else ["--compile", "model"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert run_cli(capsys, *arguments, *compile_arguments, "--out", tmp_path / "compiled")[0] == 0
    # Guided and unguided steps, both images, blocks before and after in_context_start: one graph.
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
    for name in ("7-shape_7-seed0.png", "2-shape_2-seed0.png"):
        assert_same_image(tmp_path / "compiled" / name, pixels(tmp_path / "eager" / name))


def test_dtype_defaults_to_bfloat16_on_cuda_and_float32_elsewhere():
    assert default_dtype(None, "cuda") == default_dtype(None, torch.device("cuda:1")) == torch.bfloat16
    assert default_dtype(None, "cpu") == default_dtype(None, "mps") == torch.float32
    assert default_dtype("float32", "cuda") == torch.float32 and default_dtype("float16", "cpu") == torch.float16
    for command in ("generate", "sample"):  # a usage error: one line, exit status 2
        assert cli.main([command, "--model", "x", "--out", "y", "--compile", "everything"]) == 2


def test_generate_without_model_uses_the_bundled_demo_or_says_it_is_missing(tmp_path, capsys, monkeypatch):
    arguments = ["--class", "circle", "--class", "7", "--steps", "2", "--device", "cpu"]
    assert run_cli(capsys, "generate", *arguments, "--out", tmp_path / "demo")[0] == 0
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == ["1-circle-seed0.png", "7-square-seed0.png"]

    monkeypatch.setitem(sys.modules, "pixelgen_diffusers.demo", None)  # as if the demo were not installed
    code, _, err = run_cli(capsys, "generate", "--class", "1", "--out", tmp_path / "none")
    assert_one_line_error(code, err, "generate", "no --model given and the bundled demo model is not installed")


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--class", "goldn retriever"], "Did you mean 'golden retriever'"),
        (["--class", "12"], "out of range: ids must be in [0, 10)"),
        (["--prompt", "a cat"], "class-conditional model: use --class"),
        ([], "--class is required"),
        (["--class", "1", "--num-images", "0"], "argument --num-images: must be a positive integer, got 0"),
        (["--class", "1", "--device", "gpu0"], "--device 'gpu0' is not a torch device"),
        (["--class", "1", "--timeshift", "nan"], "argument --timeshift: must be a finite number > 0, got nan"),
        (
            ["--class", "1", "--guidance-interval", "0", "inf"],
            "argument --guidance-interval: must be a finite number, got inf",
        ),
        (["--class", "1", "--guidance-interval", "0.9", "0.1"], "guidance_interval_min (0.9) must not exceed"),
    ],
)
def test_generate_errors_are_one_line_with_exit_code_2(tmp_path, capsys, model_folder, arguments, fragment):
    _, folder = model_folder
    code, _, err = run_cli(capsys, "generate", "--model", folder, *arguments, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", fragment)


def test_generate_with_a_missing_model_folder_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--model", "no_such_model", "--class", "1")
    assert_one_line_error(code, err, "generate", "neither a local folder nor a Hub id")


RUN_FOREIGN_CODE_FROM_THE_COMMAND_LINE = """
import sys
from pixelgen_diffusers import cli
from pixelgen_diffusers.utils import default_dtype

folder, out = sys.argv[1:3]
for command, *arguments in (["generate", "--class", "1", "--device", "cpu"], ["sample", "--num-samples", "2"]):
    assert cli.main([command, "--model", folder, "--trust-remote-code", *arguments, "--out", f"{out}/{command}"]) == 0
assert sys.modules["diffusers_modules.local.transformer_jit"].PixelGenTransformer2DModel.marker == "edited"
"""


def test_generate_and_sample_run_a_folders_own_code_only_with_trust_remote_code(tmp_path, capsys, model_folder):
    _, folder = model_folder
    code_file = folder / "transformer/transformer_jit.py"
    code_file.write_text(code_file.read_text() + "\nPixelGenTransformer2DModel.marker = 'edited'\n")
    for command, *arguments in (["generate", "--class", "1"], ["sample", "--num-samples", "2"]):
        code, _, err = run_cli(capsys, command, "--model", folder, *arguments, "--out", tmp_path / "refused")
        refusal = "differs from the installed package (transformer/transformer_jit.py); to run it, pass --trust-remote"
        assert_one_line_error(code, err, command, refusal)
    assert not (tmp_path / "refused").exists()
    run_python(RUN_FOREIGN_CODE_FROM_THE_COMMAND_LINE, folder, tmp_path / "out", cwd=tmp_path, block_package=False)
    assert (tmp_path / "out/generate/1-shape_1-seed0.png").is_file()
    assert np.load(tmp_path / "out/sample/samples.npz")["arr_0"].shape[0] == 2


# ----------------------------------------------------------------------------------------------- convert / export
def test_convert_command_writes_the_folder_and_prints_the_summary(tmp_path, capsys):
    ema = upstream_c2i_state_dict(seed=1, bottleneck_dim=16)
    torch.save(
        upstream_lightning_checkpoint(ema, upstream_c2i_state_dict(seed=2, bottleneck_dim=16)), tmp_path / "a.ckpt"
    )
    config = upstream_c2i_yaml(tmp_path / "a.yaml", bottleneck_dim=16)
    code, out, _ = run_cli(
        capsys, "convert", tmp_path / "a.ckpt", tmp_path / "model", "--config", config, "--dtype", "float16"
    )
    assert code == 0
    assert (tmp_path / "model/pipeline.py").is_file()
    for fragment in ("parameters stored as float16", "bottleneck_dim=16", "heun 3 steps", "folder size"):
        assert fragment in out


def test_convert_command_errors_are_one_line_and_name_the_fix(tmp_path, capsys):
    code, _, err = run_cli(capsys, "convert", tmp_path / "missing.ckpt", tmp_path / "model")
    assert_one_line_error(code, err, "convert", "source checkpoint not found")

    weights = upstream_c2i_state_dict(bottleneck_dim=16)
    args = argparse.Namespace(model="JiT-B/16", img_size=32)
    torch.save(upstream_jit_checkpoint(weights, weights, weights, args=args), tmp_path / "jit.pth")
    code, _, err = run_cli(capsys, "convert", tmp_path / "jit.pth", tmp_path / "model")
    assert_one_line_error(code, err, "convert", "pass --allow-pickle")
    # With --allow-pickle the saved args are read, and they contradict these (tiny) weights: named, one line.
    code, _, err = run_cli(capsys, "convert", tmp_path / "jit.pth", tmp_path / "model", "--allow-pickle")
    assert_one_line_error(code, err, "convert", "checkpoint args.model JiT-B/16 says patch_size=16")
    assert not (tmp_path / "model").exists()

    # argparse's own usage error, on one line too
    code, _, err = run_cli(capsys, "convert", tmp_path / "jit.pth", tmp_path / "model", "--weights", "best")
    assert_one_line_error(code, err, "convert", "invalid choice: 'best'")


def test_export_command_and_its_existing_output_error(tmp_path, capsys):
    tiny_c2i_pipeline().save_pretrained(tmp_path / "saved")
    code, out, _ = run_cli(capsys, "export", tmp_path / "saved", tmp_path / "model", "--dtype", "bfloat16")
    assert code == 0 and "verified" in out and (tmp_path / "model/transformer/transformer_jit.py").is_file()
    code, _, err = run_cli(capsys, "export", tmp_path / "saved", tmp_path / "model")
    assert_one_line_error(code, err, "export", "exists and is not empty; pass --overwrite")


# ------------------------------------------------------------------------------------------------ the entry point
def test_commands_are_registered_by_their_feature_modules():
    parser = cli.build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert list(subcommands.choices)[:4] == ["generate", "labels", "convert", "export"]
    assert list(subcommands.choices) == list(cli.COMMANDS)  # each module registers the command it is listed as
    listed = {action.dest: action.help for action in subcommands._choices_actions}
    assert listed == {command: help_text for command, (_, help_text) in cli.COMMANDS.items()}  # --help says the same


def test_a_command_whose_module_fails_to_import_reports_it_and_the_others_still_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "bogus": ("pixelgen_diffusers.no_such_module", "a test")})
    code, _, err = run_cli(capsys, "bogus", "--any", "arguments")
    assert_one_line_error(
        code, err, "bogus", "unavailable: importing pixelgen_diffusers.no_such_module failed: No module named"
    )
    code, _, err = run_cli(capsys, "convert", tmp_path / "missing.ckpt", tmp_path / "out")
    assert_one_line_error(code, err, "convert", "source checkpoint not found")
    assert cli.main(["--help"]) == 0  # lists every command without importing any
    assert "bogus" in capsys.readouterr().out
    assert "(unavailable: No module named" in cli.build_parser().format_help()
    # a working command still rejects arguments it does not know
    code, _, err = run_cli(capsys, "convert", tmp_path / "a.ckpt", tmp_path / "out", "--no-such-option")
    assert_one_line_error(code, err, "convert", "unrecognized arguments: --no-such-option")


def test_console_script_prints_one_line_errors_without_traceback(tmp_path):
    command = (
        [shutil.which("pixelgen")] if shutil.which("pixelgen") else [sys.executable, "-m", "pixelgen_diffusers.cli"]
    )
    result = subprocess.run(
        [*command, "convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pixelgen convert: error: source checkpoint not found: {tmp_path / 'missing.ckpt'}"
    ]


# ----------------------------------------------------------------------------------------------------- text-to-image
def test_generate_with_a_text_to_image_model_takes_prompts_and_names_files_by_prompt_and_seed(tmp_path, capsys):
    pipe = tiny_t2i_pipeline(num_inference_steps=2)
    pipe.save_pretrained(tmp_path / "saved")
    assert cli.main(["export", str(tmp_path / "saved"), str(tmp_path / "t2i")]) == 0
    arguments = ["--model", tmp_path / "t2i", "--prompt", "A red square!", "--seed", "3", "--device", "cpu"]
    code, stdout, _ = run_cli(capsys, "generate", *arguments, "--negative-prompt", "blurry", "--out", tmp_path / "o")
    assert code == 0
    assert [path.name for path in (tmp_path / "o").iterdir()] == ["00-a_red_square-seed3.png"]
    expected = pipe(
        prompt=["A red square!"], negative_prompt="blurry", generator=[torch.Generator().manual_seed(3)]
    ).images[0]
    assert_same_image(tmp_path / "o/00-a_red_square-seed3.png", expected)

    code, _, err = run_cli(capsys, "generate", *arguments, "--class", "1", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", "argument --class: not allowed with argument --prompt")
    code, _, err = run_cli(capsys, "generate", "--model", tmp_path / "t2i", "--class", "1", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", "text-to-image model: use --prompt, not --class")


def test_prompt_file_names_are_unique_per_prompt_and_keep_ordinary_names():
    from pixelgen_diffusers.cli.generate import slugify

    assert slugify("A red square!") == "a_red_square" and slugify("golden retriever") == "golden_retriever"
    assert slugify("日本語 テスト") == "日本語_テスト"
    long = "a very long prompt about a red square on a blue background, number "
    prompts = ["", "   ", "\t", "!!!", "日本語 テスト", "日本語 テス", long + "1", long + "2", "a red square"]
    names = [slugify(prompt) for prompt in prompts]
    assert len(set(names)) == len(prompts), names
    assert all(name and "/" not in name and len(name) <= 57 for name in names)
    assert slugify("") == slugify("")  # stable, so a rerun overwrites its own file only
