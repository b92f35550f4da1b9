"""`pixelgen edit`: the bundled demo models edited from the command line; one-line errors with exit code 2."""

import numpy as np
import PIL.Image
import pytest
import torch

from pixelgen_diffusers import PixelGenC2IInpaintPipeline, PixelGenC2IPipeline, cli
from pixelgen_diffusers.demo import model_dir
from pixelgen_diffusers.evaluation.demo_edit import make_mask, real_shapes


@pytest.fixture
def inputs(tmp_path):
    image = real_shapes(1)[0][0].numpy()
    PIL.Image.fromarray(image).save(tmp_path / "in.png")
    PIL.Image.fromarray(make_mask("centre")).save(tmp_path / "mask.png")
    return image, tmp_path / "in.png", tmp_path / "mask.png"


def run_cli(capsys, *argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_edit_with_a_mask_writes_the_inpainting_pipelines_images(tmp_path, capsys, inputs):
    image, image_path, mask_path = inputs
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        capsys, "edit", "--image", image_path, "--mask", mask_path, "--class", "star", "--num-images", 2, "--seed", 5,
        "--eta", 0.5, "--out", out,
    )  # fmt: skip
    assert code == 0 and "Wrote 2 images" in stdout
    pipe = PixelGenC2IInpaintPipeline.from_pipe(PixelGenC2IPipeline.from_pretrained(model_dir()))
    generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    expected = pipe(8, image=image, mask_image=make_mask("centre"), eta=0.5, num_images_per_prompt=2,
                    generator=generators).images  # fmt: skip
    for seed, image_expected in zip((5, 6), expected):
        written = np.asarray(PIL.Image.open(out / f"edit-8-star-seed{seed}.png"))
        assert np.abs(written.astype(int) - np.asarray(image_expected).astype(int)).max() <= 1
        assert np.array_equal(written[make_mask("centre") == 0], image[make_mask("centre") == 0])


def test_edit_strength_zero_without_a_mask_writes_the_input(tmp_path, capsys, inputs):
    image, image_path, _ = inputs
    code, _, _ = run_cli(capsys, "edit", "--image", image_path, "--strength", 0, "--class", 1, "--out", tmp_path / "o")
    assert code == 0
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "o" / "edit-1-circle-seed0.png")), image)


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--strength", "1.5", "--class", "star"], "argument --strength"),
        (["--eta", "nan", "--class", "star"], "argument --eta"),
        (["--prompt", "a red star", "--model", str(model_dir())], "use --class"),
        (["--class", "starfish"], "unknown class 'starfish'"),
        (["--mask", "MISSING", "--class", "star"], "missing.png: cannot read it as an image"),
        (["--mask", "BIG", "--class", "star"], "mask_image must be 32x32 pixels"),
        (["--mask", "IMAGE", "--class", "star"], "mask_image must be a PIL image of mode L"),
    ],
)
def test_edit_errors_are_one_line_with_exit_code_2(tmp_path, capsys, inputs, arguments, fragment):
    PIL.Image.new("L", (40, 40)).save(tmp_path / "big.png")
    names = {"MISSING": tmp_path / "missing.png", "BIG": tmp_path / "big.png", "IMAGE": inputs[1]}
    arguments = [names.get(argument, argument) for argument in arguments]
    code, _, err = run_cli(capsys, "edit", "--image", inputs[1], *arguments, "--out", tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pixelgen edit: error: "), err
    assert fragment in lines[0] and not (tmp_path / "out").exists()
