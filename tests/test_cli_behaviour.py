"""The CLI as users meet it: instant help and argument errors, class names and their errors, threads, text encoders,
output folders, `pixelgen sample` defaults, and local paths that never go to the Hub."""

import json
import os
import shutil

import huggingface_hub
import pytest
import torch
from components import (
    run_python,
    tiny_c2i_pipeline,
    tiny_qwen3,
    tiny_qwen_tokenizer,
    tiny_t2i_pipeline,
    tiny_transformer,
)
from test_cli import assert_one_line_error, assert_same_image, run_cli

from pixelgen_diffusers import (
    PixelGenC2IPipeline,
    PixelGenScheduler,
    imagenet_id2label,
    load_pipeline,
    utils,
)
from pixelgen_diffusers.cli.generate import set_threads
from pixelgen_diffusers.conversion.model_folder import ModelFolderError
from pixelgen_diffusers.schedulers import scheduling_pixelgen


PARSE_ONLY = """
import sys
from pixelgen_diffusers import cli

for argv in (["--help"], ["--version"], ["generate", "--help"], ["generate", "--steps", "x"], ["sample", "--help"],
             ["sample", "--sampler", "rk4"], ["convert"], ["export", "--help"], ["labels", "--help"]):
    code = cli.main(argv)  # help and usage errors return their exit status (0, or 2 with one line)
    assert code in (0, 2), (argv, code)
assert cli.main(["labels", "retriever"]) == 0
heavy = sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules)
assert not heavy, f"parsing imported {heavy}"
"""


def test_help_argument_errors_and_labels_import_neither_torch_nor_diffusers(tmp_path):
    run_python(PARSE_ONLY, cwd=tmp_path, block_package=False)


def test_the_cli_sampler_choices_are_the_schedulers():
    assert utils.SAMPLING_METHODS == scheduling_pixelgen.SAMPLING_METHODS


# ----------------------------------------------------------------------------------------------------- class names
def test_labels_command_searches_imagenet_names_and_a_models_own(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "labels", "CRANE")
    assert code == 0 and out.splitlines() == ["  134  crane", "  517  crane"]
    tiny_c2i_pipeline().save_pretrained(tmp_path / "model")
    code, out, _ = run_cli(capsys, "labels", "retriever", "--model", tmp_path / "model")
    assert code == 0 and out.splitlines() == ["    3  golden retriever, retriever"]
    code, _, err = run_cli(capsys, "labels", "zebra", "--model", tmp_path / "model")
    assert_one_line_error(code, err, "labels", "no model class name contains 'zebra'")


@pytest.fixture
def small_model(tmp_path):
    tiny_c2i_pipeline(num_inference_steps=1).save_pretrained(tmp_path / "small")
    return tmp_path / "small"


def test_class_errors_list_a_small_label_set_and_take_negative_numbers_as_ids(tmp_path, capsys, small_model):
    code, _, err = run_cli(capsys, "generate", "--model", small_model, "--class", "zebra", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", "unknown class 'zebra'. This model's classes: 0 shape 0, 1 shape 1")
    code, _, err = run_cli(capsys, "generate", "--model", small_model, "--class", "-1", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", "Class id -1 is out of range: ids must be in [0, 10)")
    code, _, err = run_cli(capsys, "generate", "--model", small_model, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", '--class is required: a class name (e.g. --class "shape 0")')
    assert not (tmp_path / "o").exists()  # failed runs leave no output folder behind


def test_class_errors_on_imagenet_point_to_the_labels_command_and_name_ambiguous_candidates(tmp_path, capsys):
    transformer = tiny_transformer(num_classes=1000, randomize=False)
    PixelGenC2IPipeline(transformer, PixelGenScheduler(), id2label=imagenet_id2label()).save_pretrained(tmp_path / "m")
    arguments = ["generate", "--model", tmp_path / "m", "--out", tmp_path / "o", "--class"]
    code, _, err = run_cli(capsys, *arguments, "goldn retrievr")
    assert_one_line_error(code, err, "generate", "Did you mean 'golden retriever'")
    assert 'Search the 1000 class names with `pixelgen labels "goldn retrievr"' in err
    code, _, err = run_cli(capsys, *arguments, "crane")
    assert_one_line_error(code, err, "generate", "'crane' is ambiguous: it names classes 134 (crane); 517 (crane)")


def test_class_and_prompt_together_are_a_usage_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--class", "circle", "--prompt", "a star", "--out", tmp_path / "o")
    assert code == 2 and "--prompt: not allowed with argument --class" in err
    assert "text-to-image model" not in err and not (tmp_path / "o").exists()


def test_missing_class_on_the_demo_model_suggests_a_demo_class(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "generate", '(e.g. --class "arrow") or an id (--class 0)')
    assert "golden retriever" not in err and "1 circle" in err


# -------------------------------------------------------------------------------------------------------- threads
def test_threads_option_and_a_single_thread_default_for_small_models(monkeypatch):
    before = torch.get_num_threads()
    try:
        pipe = tiny_c2i_pipeline()
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        set_threads(None, pipe)
        assert torch.get_num_threads() == 1  # a small model: one thread
        set_threads(2, pipe)
        assert torch.get_num_threads() == 2  # --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        set_threads(None, pipe)
        assert torch.get_num_threads() == 2  # as does the environment
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_positive(tmp_path, capsys, small_model):
    code, _, err = run_cli(capsys, "generate", "--model", small_model, "--class", "1", "--threads", "0")
    assert_one_line_error(code, err, "generate", "--threads: must be a positive integer, got 0")


# --------------------------------------------------------------------------------------------- text-to-image CLI
def test_text_to_image_without_an_encoder_names_the_option_and_takes_a_local_encoder_folder(tmp_path, capsys):
    tiny_t2i_pipeline(with_text_encoder=False, num_inference_steps=2).save_pretrained(tmp_path / "t2i")
    tiny_qwen3().save_pretrained(tmp_path / "qwen")
    tiny_qwen_tokenizer().save_pretrained(tmp_path / "qwen")
    arguments = ["generate", "--model", tmp_path / "t2i", "--prompt", "a red cube", "--out", tmp_path / "o"]
    code, _, err = run_cli(capsys, *arguments)
    assert_one_line_error(code, err, "generate", "loading it from 'Qwen/Qwen3-1.7B' failed")
    assert "pass --text-encoder FOLDER" in err
    assert not (tmp_path / "o").exists()

    assert run_cli(capsys, *arguments, "--text-encoder", tmp_path / "qwen")[0] == 0
    pipe = load_pipeline(tmp_path / "t2i")
    pipe.load_text_encoder(str(tmp_path / "qwen"))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt=["a red cube"], generator=[torch.Generator().manual_seed(0)]).images[0]
    assert_same_image(tmp_path / "o/00-a_red_cube-seed0.png", expected)

    (tmp_path / "prompts.txt").write_text("a red cube\n")
    arguments = ["sample", "--model", tmp_path / "t2i", "--prompts", tmp_path / "prompts.txt", "--out", tmp_path / "s"]
    code, _, err = run_cli(capsys, *arguments, "--images-per-prompt", "1")
    assert_one_line_error(code, err, "sample", "pass --text-encoder FOLDER")
    assert not (tmp_path / "s").exists()
    assert run_cli(capsys, *arguments, "--images-per-prompt", "1", "--text-encoder", tmp_path / "qwen")[0] == 0
    assert_same_image(tmp_path / "s/000000.png", expected)


# ----------------------------------------------------------------------------------------------------- sample CLI
def test_sample_defaults_to_the_demo_model(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "sample", "--num-samples", "2", "--steps", "1", "--out", tmp_path / "s")
    assert code == 0 and "Packed 2 samples" in out
    recorded = json.loads((tmp_path / "s/sampling_config.json").read_text())
    assert recorded["model"].endswith(os.path.join("demo", "model")) and recorded["num_inference_steps"] == 1


# ---------------------------------------------------------------------------------------------------- local paths
@pytest.mark.parametrize("path", ["/data/models/PixelGen-XL", "./models/PixelGen-XL", "../PixelGen-XL", "~/PixelGen"])
def test_a_local_looking_path_that_does_not_exist_is_never_sent_to_the_hub(path, monkeypatch):
    def no_download(**kwargs):
        raise AssertionError(f"asked the Hub for {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    with pytest.raises(ModelFolderError, match=f"model folder {path} does not exist"):
        load_pipeline(path)


def test_labels_of_a_hub_model_download_only_its_model_index(tmp_path, capsys, monkeypatch):
    tiny_c2i_pipeline().save_pretrained(tmp_path / "model")
    calls = []

    def snapshot_download(**kwargs):
        calls.append(kwargs)
        (tmp_path / "snapshot/Tiny").mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "model/model_index.json", tmp_path / "snapshot/Tiny/model_index.json")
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    code, out, _ = run_cli(capsys, "labels", "golden", "--model", "someone/repo/Tiny")
    assert code == 0 and out.splitlines() == ["    3  golden retriever, retriever"]
    assert calls == [{"repo_id": "someone/repo", "allow_patterns": ["Tiny/model_index.json"]}]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (
            ["train", "--data-dir", "d", "--output-dir", "o", "--model-config", "{bad"],
            "'{bad' is not valid JSON (Expect",
        ),
        (["train", "--data-dir", "d", "--output-dir", "o", "--model-config", "[1]"], "must be a JSON object"),
        (
            ["train", "--data-dir", "d", "--output-dir", "o", "--model-config", "no.json"],
            "JSON file no.json not found",
        ),
        (["export", "a", "b", "--max-shard-size", "abc"], "the shard size must be a size, got 'abc'; accepted: a"),
        (["export", "a", "b", "--max-shard-size", "0GB"], "the shard size must be a size, got '0GB'"),
        (["convert", "a", "b", "--max-shard-size", "1.5XB"], "the shard size must be a size, got '1.5XB'"),
    ],
)
def test_malformed_option_values_are_named_at_parse_time(capsys, argv, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, argv[0], fragment)
    assert "invalid" not in err and "not supported" not in err


def test_export_names_a_missing_source_and_checks_the_shard_size_first(tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", tmp_path / "nonexistent", tmp_path / "out")
    assert_one_line_error(code, err, "export", f"source folder {tmp_path / 'nonexistent'} does not exist")
    with pytest.raises(ModelFolderError, match="max_shard_size must be a size, got 'abc'"):
        from pixelgen_diffusers import export_pipeline

        export_pipeline(tiny_c2i_pipeline(), tmp_path / "out", max_shard_size="abc")
    assert not (tmp_path / "out").exists()
    pipe = tiny_c2i_pipeline()
    pipe.save_pretrained(tmp_path / "saved")
    assert run_cli(capsys, "export", tmp_path / "saved", tmp_path / "out", "--max-shard-size", "100000")[0] == 0


def test_sample_refuses_options_of_the_other_kind_of_set(tmp_path, capsys):
    (tmp_path / "prompts.txt").write_text("a red cube\n")
    arguments = ["sample", "--prompts", tmp_path / "prompts.txt", "--out", tmp_path / "s"]
    code, _, err = run_cli(capsys, *arguments, "--num-samples", "5")
    assert_one_line_error(code, err, "sample", "--num-samples sizes class-to-image sets")
    code, _, err = run_cli(capsys, "sample", "--images-per-prompt", "2", "--out", tmp_path / "s")
    assert_one_line_error(code, err, "sample", "--images-per-prompt needs --prompts")
    assert not (tmp_path / "s").exists()
    out = run_cli(capsys, "sample", "--help")[1]
    assert "images per prompt (default 4)" in " ".join(out.split())
