"""`--scheduler` / `--cache` on the command line, MagCache calibration, and eval-demo's cache and solver rows."""

import json

import pytest
from diffusers import UniPCMultistepScheduler

from pixelgen_diffusers.cli import main as cli_main
from pixelgen_diffusers.conversion.hub import load_pipeline
from pixelgen_diffusers.demo import model_dir
from pixelgen_diffusers.evaluation.demo_c2i import evaluate
from pixelgen_diffusers.utils.sampling_options import calibrate_mag_ratios, make_scheduler, parse_cache


@pytest.fixture(scope="module")
def demo_pipeline():
    pipeline = load_pipeline(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_parse_cache_reads_name_and_value_and_rejects_bad_specs():
    assert parse_cache("first-block:0.2") == ("first-block", 0.2)
    assert parse_cache("sea") == ("sea", 0.25)
    assert parse_cache("taylorseer:3") == ("taylorseer", 3.0)
    with pytest.raises(ValueError, match="Did you mean 'first-block'"):
        parse_cache("first-blok:0.1")
    with pytest.raises(ValueError, match="must be a number"):
        parse_cache("mag:abc")
    with pytest.raises(ValueError, match="finite number >= 0"):
        parse_cache("mag:nan")
    with pytest.raises(ValueError, match="positive integer"):
        parse_cache("taylorseer:1.5")


def test_stock_schedulers_keep_the_models_timeshift(demo_pipeline):
    scheduler = make_scheduler("unipc", demo_pipeline, timeshift=2.5)
    assert isinstance(scheduler, UniPCMultistepScheduler) and scheduler.config.flow_shift == 2.5
    assert scheduler.config.use_flow_sigmas and scheduler.config.prediction_type == "flow_prediction"
    assert make_scheduler("flow-match-euler", demo_pipeline).config.shift == demo_pipeline.scheduler.config.timeshift
    assert make_scheduler("pixelgen", demo_pipeline) is demo_pipeline.scheduler


def test_mag_ratios_have_one_entry_per_evaluation(demo_pipeline):
    ratios = calibrate_mag_ratios(
        demo_pipeline, class_labels=[1, 2], num_inference_steps=4, sampling_method="heun", guidance_scale=3.0
    )
    assert len(ratios) == 7 and ratios[0] == 1.0
    assert all(ratio > 0 for ratio in ratios) and ratios[1:] != [1.0] * 6
    assert not demo_pipeline.transformer._forward_hooks and not demo_pipeline.transformer._forward_pre_hooks


@pytest.mark.parametrize(
    "options", [["--scheduler", "unipc"], ["--cache", "first-block:0.1"], ["--cache", "mag", "--steps", "6"]]
)
def test_generate_with_scheduler_or_cache_writes_images(tmp_path, capsys, options):
    assert cli_main(["generate", "--class", "circle", "--num-images", "2", "--out", str(tmp_path), *options]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 2


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--scheduler", "unipcc"], "Unknown scheduler 'unipcc'; accepted: pixelgen, flow-match-euler"),
        (["--cache", "faster"], "FasterCache needs the unconditional rows in every call"),
        (["--scheduler", "unipc", "--sampler", "heun"], "--sampler chooses PixelGenScheduler's solver"),
        (["--cache", "first-block:0.1", "--compile"], "--cache and --compile cannot be combined"),
        (["--cache", "taylorseer", "--compile", "model"], "drop --cache taylorseer or --compile"),
    ],
)
def test_generate_option_errors_are_one_line(tmp_path, capsys, options, fragment):
    assert cli_main(["generate", "--class", "circle", "--out", str(tmp_path), *options]) == 2
    error = capsys.readouterr().err
    assert fragment in error and error.count("\n") == 1


def test_faster_cache_error_names_the_cli_remedy_and_the_remedy_works(tmp_path, capsys):
    assert cli_main(["generate", "--class", "circle", "--out", str(tmp_path / "bad"), "--cache", "faster"]) == 2
    assert "`--guidance-interval -1 1`" in capsys.readouterr().err
    arguments = ["generate", "--class", "circle", "--steps", "2", "--out", str(tmp_path / "good"), "--cache", "faster"]
    assert cli_main([*arguments, "--guidance-interval", "-1", "1"]) == 0
    assert len(list((tmp_path / "good").glob("*.png"))) == 1


def test_sample_records_the_scheduler_and_cache(tmp_path, capsys):
    folder = tmp_path / "samples"
    arguments = ["sample", "--model", str(model_dir()), "--out", str(folder), "--num-samples", "2", "--no-npz"]
    assert cli_main([*arguments, "--scheduler", "dpm-solver", "--cache", "first-block:0.1"]) == 0
    recorded = json.loads((folder / "sampling_config.json").read_text())
    assert recorded["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert recorded["cache"] == {"class": "FirstBlockCacheConfig", "threshold": 0.1}
    # Resuming with another cache is refused: the samples would mix two settings.
    assert cli_main([*arguments, "--scheduler", "dpm-solver", "--cache", "first-block:0.2"]) == 2


def test_sample_refuses_cache_with_compile_before_writing_anything(tmp_path, capsys):
    folder = tmp_path / "samples"
    arguments = ["sample", "--model", str(model_dir()), "--out", str(folder), "--num-samples", "2", "--no-npz"]
    assert cli_main([*arguments, "--cache", "first-block:0.1", "--compile"]) == 2
    assert "--cache and --compile cannot be combined" in capsys.readouterr().err
    assert not folder.exists()


def test_evaluate_scores_cache_rows_against_their_uncached_recipe(demo_pipeline):
    rows = evaluate(
        demo_pipeline, [("heun", 6, 3.0, "first-block:0.2"), ("unipc", 3, 3.0)], num_samples=10, num_real=20
    )
    assert [(row["method"], row["cache"]) for row in rows] == [
        ("real images", None),
        ("heun", None),  # inserted: the cache row's share is relative to it
        ("heun", "first-block:0.2"),
        ("unipc", None),
    ]
    assert rows[1]["evaluations"] == 11 and rows[3]["evaluations"] == 3
    assert 0 < rows[2]["blocks_computed"] < 1 and rows[2]["attention_computed"] == rows[2]["blocks_computed"]
    assert demo_pipeline.transformer._cache_config is None and hasattr(demo_pipeline.scheduler, "guidance_mask")


def test_generate_stock_scheduler_takes_timeshift_as_its_shift(tmp_path, capsys):
    import numpy as np
    import PIL.Image

    common = ["generate", "--class", "circle", "--steps", "4", "--timeshift", "2.0"]
    assert cli_main([*common, "--sampler", "euler", "--out", str(tmp_path / "pixelgen")]) == 0
    assert cli_main([*common, "--scheduler", "flow-match-euler", "--out", str(tmp_path / "stock")]) == 0
    images = [np.asarray(PIL.Image.open(next((tmp_path / name).glob("*.png")))) for name in ("pixelgen", "stock")]
    # Equal samples up to 1e-5, so equal 8-bit images up to a rounding step.
    assert np.abs(images[0].astype(int) - images[1].astype(int)).max() <= 1
