"""`pixelgen train`'s output folder: one run per folder (unless --resume or --overwrite), nothing written through
planted links, checkpoints with the permissions of other files, up-front checks and one-line errors for bad data,
bad LoRA targets and a resume without a checkpoint, and the one-thread default of small models."""

import json
import os
import stat

import PIL.Image
import pytest
import torch
from components import TINY_TRAIN_MODEL, write_tiny_image_folder
from test_faults import TRAIN, assert_one_line, run_cli

from pixelgen_diffusers.training import TrainingConfig, train


@pytest.fixture
def data_dir(tmp_path):
    write_tiny_image_folder(tmp_path / "data", num_classes=2, per_class=2, size=36)
    return tmp_path / "data"


def _config(data_dir, output_dir, **overrides) -> TrainingConfig:
    values = dict(
        data_dir=str(data_dir),
        output_dir=str(output_dir),
        sample_size=32,
        model_config=TINY_TRAIN_MODEL,
        batch_size=2,
        max_steps=2,
        num_workers=0,
        log_every=1,
        sample_every=2,
        checkpoint_every=2,
        num_inference_steps=2,
    )
    return TrainingConfig(**{**values, **overrides})


def test_a_new_run_into_a_folder_of_another_run_is_refused_unless_overwrite(tmp_path, data_dir):
    out = tmp_path / "run"
    train(_config(data_dir, out))
    before = (out / "checkpoint-2" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="holds another run .*--resume latest.*--overwrite"):
        train(_config(data_dir, out, seed=1))
    assert (out / "checkpoint-2" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() == before

    train(_config(data_dir, out, seed=1, max_steps=1, checkpoint_every=1, overwrite=True))
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1"]  # the other run is gone
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1]


def test_the_cli_refuses_another_run_and_names_the_problem_of_a_resume_without_checkpoint(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--output-dir", out, "--resume", "latest")
    assert_one_line(code, err, "train", "holds no checkpoint (checkpoint-N folder) to resume from")
    assert run_cli(capsys, "train", "--data-dir", data_dir, "--output-dir", out, *TRAIN, "--max-steps", "2")[0] == 0
    arguments = ["train", "--data-dir", data_dir, "--output-dir", out, *TRAIN, "--max-steps", "2", "--seed", "3"]
    code, _, err = run_cli(capsys, *arguments)
    assert_one_line(code, err, "train", "holds another run (checkpoint-2")
    assert run_cli(capsys, *arguments, "--overwrite")[0] == 0


def test_train_never_writes_through_links_planted_in_its_output_folder(tmp_path, data_dir):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim.txt").write_text("keep")
    out.mkdir()
    (out / "samples").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match="samples is a symbolic link"):
        train(_config(data_dir, out, resume="latest"))  # a resume of nothing: a new run, links still refused
    assert sorted(path.name for path in elsewhere.iterdir()) == ["victim.txt"]

    (out / "samples").unlink()
    (out / "train_log.jsonl").symlink_to(elsewhere / "victim.txt")
    with pytest.raises(ValueError, match="train_log.jsonl is a symbolic link"):
        train(_config(data_dir, out, resume="latest"))
    assert (elsewhere / "victim.txt").read_text() == "keep"


def test_checkpoints_have_the_permissions_of_other_files(tmp_path, data_dir):
    umask = os.umask(0o022)
    try:
        checkpoint = train(_config(data_dir, tmp_path / "run"))
    finally:
        os.umask(umask)
    for path in [checkpoint, *checkpoint.rglob("*")]:
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_train_sets_one_thread_for_small_models_and_takes_threads(tmp_path, capsys, data_dir, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        arguments = ["train", "--data-dir", data_dir, *TRAIN, "--max-steps", "1", "--checkpoint-every", "1"]
        torch.set_num_threads(2)
        assert run_cli(capsys, *arguments, "--output-dir", tmp_path / "a")[0] == 0
        assert torch.get_num_threads() == 1
        assert run_cli(capsys, *arguments, "--output-dir", tmp_path / "b", "--threads", "2")[0] == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_an_unwritable_caption_cache_dir_is_refused_up_front(tmp_path, capsys, data_dir):
    (tmp_path / "file").write_text("")
    arguments = ["train", "--data-dir", data_dir, "--output-dir", tmp_path / "run", *TRAIN]
    code, _, err = run_cli(capsys, *arguments, "--caption-cache-dir", tmp_path / "file" / "cache")
    assert_one_line(code, err, "train", "--caption-cache-dir")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("num_workers", ["0", "1"])
def test_a_data_set_of_undecodable_images_is_one_line_not_a_recursion_error(tmp_path, capsys, data_dir, num_workers):
    for path in data_dir.rglob("*.png"):  # the header reads, the pixel data is cut off
        path.write_bytes(path.read_bytes()[:100])
        with PIL.Image.open(path) as image:
            assert image.size == (36, 36)
    arguments = [*TRAIN, "--num-workers", num_workers, "--max-steps", "1"]
    code, _, err = run_cli(capsys, "train", "--data-dir", data_dir, "--output-dir", tmp_path / "run", *arguments)
    assert_one_line(code, _errors_only(err), "train", "can be decoded")


def _errors_only(err: str) -> str:
    """stderr without the per-file warnings (one per broken file) that precede the error."""
    return "\n".join(line for line in err.splitlines() if "Could not decode" not in line)


@pytest.mark.parametrize("file_name", ["1", "null", "[1, 2]", '""'])
def test_metadata_rows_whose_file_name_is_not_a_path_are_one_line_naming_the_row(tmp_path, capsys, file_name):
    folder = tmp_path / "captions"
    folder.mkdir()
    PIL.Image.new("RGB", (36, 36)).save(folder / "a.png")
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "a"}\n' + f'{{"file_name": {file_name}, "text": "b"}}\n'
    )
    code, _, err = run_cli(capsys, "train", "--data-dir", folder, "--output-dir", tmp_path / "run", "--max-steps", "1")
    assert_one_line(code, err, "train", "metadata.jsonl line 2: `file_name` is")


def test_a_lora_target_that_names_a_convolution_is_one_line_up_front(tmp_path):
    from test_lora import _lora_config

    from pixelgen_diffusers.training import Trainer

    with pytest.raises(
        ValueError, match=r"'proj_in', which also names patch_embedder.proj_in \(PatchLinear\).*'ff.proj_in'"
    ):
        Trainer(_lora_config(tmp_path, "c2i", "run", lora_target_modules=["proj_in"]))


def test_sample_grids_say_what_they_are_doing(tmp_path, capsys, data_dir):
    train(_config(data_dir, tmp_path / "run", max_steps=1, sample_every=1, checkpoint_every=1))
    assert (
        f"step 1: drawing the sample grid {tmp_path / 'run' / 'samples' / 'step-0000001.png'}"
        in capsys.readouterr().err
    )
