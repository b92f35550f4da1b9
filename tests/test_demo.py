"""The bundled demo: the procedural shapes data, the shipped model and classifier, and the evaluation."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelgen_diffusers
from pixelgen_diffusers.cli import main as cli_main
from pixelgen_diffusers.conversion.hub import load_pipeline
from pixelgen_diffusers.demo import (
    CLASS_NAMES,
    make_shapes,
    model_dir,
    render_shape,
    t2i_model_dir,
    write_shapes_dataset,
)
from pixelgen_diffusers.demo.classifier import accuracy, load_classifier
from pixelgen_diffusers.demo.shapes import EVAL_SEED
from pixelgen_diffusers.evaluation.demo_c2i import choose_default, evaluate, frechet_distance
from pixelgen_diffusers.training import ImageClassDataset


@pytest.fixture(scope="module")
def demo_pipeline():
    pipeline = load_pipeline(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_shapes_are_deterministic_per_seed_and_differ_across_seeds():
    images, labels = make_shapes(2, seed=5)
    again, _ = make_shapes(2, seed=5)
    other, _ = make_shapes(2, seed=6)
    assert images.shape == (20, 3, 32, 32) and labels.tolist() == list(range(10)) * 2
    assert torch.equal(images, again)
    assert not torch.equal(images, other)
    assert -1 <= images.min() and images.max() <= 1
    with pytest.raises(ValueError, match="class_id"):
        render_shape(10, np.random.default_rng(0))


def test_shapes_folder_is_what_the_trainer_reads_with_the_same_class_ids(tmp_path):
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES) and len(set(CLASS_NAMES)) == 10
    write_shapes_dataset(tmp_path, num_per_class=2, seed=5)
    dataset = ImageClassDataset(tmp_path, sample_size=32)
    assert dataset.id2label == dict(enumerate(CLASS_NAMES))
    images, labels = make_shapes(2, seed=5)
    circle = CLASS_NAMES.index("circle")
    image, label = dataset[2 * circle + 1]  # the second circle; PNG is lossless
    assert label == circle
    assert torch.allclose(image, images[10 + circle], atol=1e-6)


def test_demo_classifier_scores_real_held_out_images_above_95_percent():
    images, labels = make_shapes(20, EVAL_SEED)
    assert accuracy(load_classifier(), images, labels) >= 0.95


def test_frechet_distance_matches_closed_form_on_exact_covariances():
    # Rows of a Sylvester-Hadamard matrix without its constant column: zero-mean, orthogonal columns, so the sample
    # covariance is exactly 8/7 I and FD = |mu_a - mu_b|^2 + 8/7 * sum (a_j - b_j)^2.
    hadamard = torch.ones(1, 1)
    for _ in range(3):
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
    design = hadamard[:, 1:].double()
    scale_a, scale_b = torch.arange(1.0, 8.0).double(), torch.linspace(0.5, 3.0, 7).double()
    mean_a, mean_b = torch.zeros(7).double(), torch.full((7,), 0.25).double()
    expected = (mean_a - mean_b).square().sum() + 8 / 7 * (scale_a - scale_b).square().sum()
    distance = frechet_distance(design * scale_a + mean_a, design * scale_b + mean_b)
    assert distance == pytest.approx(expected.item(), rel=1e-9)
    assert frechet_distance(design, design) == pytest.approx(0.0, abs=1e-9)


def test_choose_default_takes_lowest_distance_within_one_point_of_best_accuracy():
    rows = [
        {"method": "real images", "accuracy": 1.0, "frechet_distance": 0.1},
        {"method": "heun", "accuracy": 0.95, "frechet_distance": 3.0},
        {"method": "euler", "accuracy": 0.945, "frechet_distance": 2.0},
        {"method": "adam_lm", "accuracy": 0.90, "frechet_distance": 1.0},
    ]
    assert choose_default(rows)["method"] == "euler"


def test_demo_model_is_small_named_and_configured(demo_pipeline):
    weights = list(model_dir().rglob("*.safetensors"))
    assert weights and sum(path.stat().st_size for path in weights) < 10 * 2**20
    assert [demo_pipeline.id2label[i] for i in range(10)] == list(CLASS_NAMES)
    assert demo_pipeline.get_label_ids("circle") == [CLASS_NAMES.index("circle")]
    assert demo_pipeline.transformer.config.sample_size == 32


def test_demo_model_ships_the_installed_code():
    package_dir = Path(pixelgen_diffusers.__file__).parent
    shipped = {
        "pipeline.py": "pipelines/pipeline_pixelgen_c2i.py",
        "transformer/transformer_jit.py": "models/transformer_jit.py",
        "scheduler/scheduling_pixelgen.py": "schedulers/scheduling_pixelgen.py",
        # the shared modules the pipeline and the transformer import relatively, shipped beside them
        "pipeline_utils_pixelgen.py": "pipelines/pipeline_utils_pixelgen.py",
        "transformer/jit_layers.py": "models/jit_layers.py",
    }
    assert sorted(path.relative_to(model_dir()).as_posix() for path in model_dir().rglob("*.py")) == sorted(shipped)
    stale = [
        name
        for name, module in shipped.items()
        if (model_dir() / name).read_bytes() != (package_dir / module).read_bytes()
    ]
    assert not stale, f"The demo folder's {stale} are stale: run `python scripts/make_demo_model.py --refresh-code`."


# POSIX (two components or more, so a lone "/" token is not one), Windows drive and UNC paths.
ABSOLUTE_PATH = re.compile(r"^(/[^/]+/|[A-Za-z]:[\\/]|\\\\)")


def json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from json_strings(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)


@pytest.mark.parametrize("folder", [model_dir(), t2i_model_dir()], ids=["class-to-image", "text-to-image"])
def test_shipped_configs_hold_no_absolute_paths(folder):
    """Paths of the machine that exported a demo mean nothing on a user's machine (and differ per export)."""
    files = sorted(folder.rglob("*.json"))
    assert {"model_index.json", "config.json"} <= {path.name for path in files}
    found = {
        str(path.relative_to(folder)): value
        for path in files
        for value in json_strings(json.loads(path.read_text()))
        if ABSOLUTE_PATH.match(value)
    }
    assert not found, found


def test_demo_model_samples_are_recognised_by_the_classifier(demo_pipeline):
    generator = torch.Generator().manual_seed(1)
    labels = list(range(10)) * 2
    images = demo_pipeline(labels, generator=generator, output_type="pt").images * 2 - 1
    assert accuracy(load_classifier(), images, torch.tensor(labels)) >= 0.8


def test_pixelgen_generate_uses_the_demo_model_by_default(tmp_path, capsys):
    assert cli_main(["generate", "--class", "circle", "--num-images", "2", "--out", str(tmp_path)]) == 0
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 2
    import PIL.Image

    assert PIL.Image.open(written[0]).size == (32, 32)


def test_evaluate_scores_real_and_generated_rows(demo_pipeline):
    rows = evaluate(demo_pipeline, [("euler", 2, 1.0)], num_samples=20, num_real=40)
    assert [row["method"] for row in rows] == ["real images", "euler"]
    assert rows[0]["accuracy"] >= 0.9
    assert 0 <= rows[1]["accuracy"] <= 1 and rows[1]["frechet_distance"] > 0


def test_eval_demo_command_prints_a_table_and_writes_json(tmp_path, capsys):
    output = tmp_path / "rows.json"
    arguments = ["eval-demo", "--methods", "euler", "--steps", "2", "--guidance", "1", "--num-samples", "10"]
    assert cli_main([*arguments, "--num-real", "20", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| euler | 2 | 1 |" in printed and "| real images |" in printed
    assert [row["method"] for row in json.loads(output.read_text())] == ["real images", "euler"]
