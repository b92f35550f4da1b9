# Copyright 2026 The pixelgen-diffusers authors. Licensed under the MIT license.
"""`pixelgen sweep`: a grid sampled with the bundled demo model and scored, resumable, with CSV/JSON/PNG outputs."""

import csv
import json

import PIL.Image
import pytest
from evaluation_helpers import fid_helper_wheel

from pixelgen_diffusers.cli import main
from pixelgen_diffusers.demo.shapes import EVAL_SEED, write_shapes_dataset
from pixelgen_diffusers.evaluation import evaluate, load_inception


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_DIFFUSERS_CACHE", str(tmp_path / "cache"))


def test_sweep_samples_and_scores_every_point_and_resumes(tmp_path, capsys):
    wheel = fid_helper_wheel()
    real = write_shapes_dataset(tmp_path / "real", num_per_class=1, seed=EVAL_SEED)
    arguments = ["sweep", real, "--out", tmp_path / "sweep", "--guidance-scale", "1", "3", "--steps", "2"]
    arguments += ["--num-samples", "5", "--batch-size", "5", "--metric", "precision", "recall"]
    arguments += ["--plot-metric", "recall", "--inception-weights", wheel]
    assert main([str(argument) for argument in arguments]) == 0, capsys.readouterr().err
    with open(tmp_path / "sweep" / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["guidance_scale"] for row in rows] == ["1.0", "3.0"] and {row["steps"] for row in rows} == {"2"}
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())[1]["guidance_scale"] == 3.0
    with PIL.Image.open(tmp_path / "sweep" / "sweep.png") as plot:
        assert plot.format == "PNG" and plot.width > 100
    # Each point's scores are `evaluate` on that point's samples.
    folder = tmp_path / "sweep" / "points" / "guidance_scale-3_steps-2"
    model, sha256 = load_inception(wheel)
    metrics = ["precision", "recall"]
    expected = evaluate(real, folder / "samples.npz", metrics=metrics, model=model, weights_sha256=sha256)
    assert (float(rows[1]["precision"]), float(rows[1]["recall"])) == (expected["precision"], expected["recall"])
    # A rerun finds every point done: nothing is sampled or scored again.
    modified = (folder / "samples.npz").stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(argument) for argument in arguments]) == 0
    assert capsys.readouterr().out.count("done before") == 2
    assert (folder / "samples.npz").stat().st_mtime_ns == modified


def test_a_bad_guidance_interval_is_one_line_before_any_work(tmp_path, capsys):
    status = main(
        ["sweep", str(tmp_path), "--out", str(tmp_path / "out"), "--num-samples", "4"]
        + ["--guidance-interval", "0.5:0.2"]
    )
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "--guidance-interval '0.5:0.2'" in error
    assert not (tmp_path / "out").exists()


def test_the_cache_axis_samples_with_and_without_the_cache(tmp_path, capsys):
    import numpy as np

    real = write_shapes_dataset(tmp_path / "real", num_per_class=1, seed=EVAL_SEED)
    arguments = ["sweep", real, "--out", tmp_path / "sweep", "--cache", "first-block:1", "none", "--steps", "4"]
    arguments += ["--num-samples", "4", "--batch-size", "4", "--metric", "precision", "recall"]
    arguments += ["--inception-weights", fid_helper_wheel()]
    assert main([str(argument) for argument in arguments]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [row["cache"] for row in rows] == ["first-block:1", None]
    plain = np.load(tmp_path / "sweep" / "points" / "steps-4" / "samples.npz")["arr_0"]
    cached = np.load(tmp_path / "sweep" / "points" / "steps-4_cache-first-block_1" / "samples.npz")["arr_0"]
    # A threshold of 1 reuses cached blocks, so other images; the point after it runs with the cache disabled again,
    # drawing what `pixelgen sample` draws.
    assert not np.array_equal(plain, cached)
    arguments = ["sample", "--out", tmp_path / "sample", "--num-samples", "4", "--batch-size", "4", "--steps", "4"]
    assert main([str(argument) for argument in arguments]) == 0
    assert np.array_equal(np.load(tmp_path / "sample" / "samples.npz")["arr_0"], plain)


def test_an_unknown_cache_is_one_line_before_any_work(tmp_path, capsys):
    status = main(
        ["sweep", str(tmp_path), "--out", str(tmp_path / "out"), "--num-samples", "4", "--cache", "firstblock"]
    )
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "Did you mean 'first-block'" in error
    assert not (tmp_path / "out").exists()
