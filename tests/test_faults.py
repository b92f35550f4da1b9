"""Faults: every CLI failure is one line (a traceback only with --debug); files appear complete or not at all, never
written through planted links, with full disks injected; one run per output folder (two real processes); training
state that is applied, recorded and replaced as printed; the batch-size guarantee of `pixelgen sample`."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from components import TINY_TRAIN_MODEL, tiny_c2i_pipeline, write_tiny_image_folder
from safetensors.torch import load_file

from pixelgen_diffusers import cli
from pixelgen_diffusers.cli.sample import sample_many
from pixelgen_diffusers.training import TrainingConfig, train
from pixelgen_diffusers.utils import FolderLock, atomic_write, atomic_write_bytes


SETTINGS = dict(num_inference_steps=2, guidance_scale=2.0)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PIXELGEN_DEBUG": ""}


@pytest.fixture
def model_dir(tmp_path):
    tiny_c2i_pipeline(num_inference_steps=2).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def run_cli(capsys, *argv):
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code, err, command, fragment, status=2):
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]  # no bars
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith(f"pixelgen {command}: error: "), err
    assert fragment in lines[0], lines[0]


def outside_files(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


# --------------------------------------------------------------------------------------- 3. the CLI prints one line
@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--guidance-scale", "inf"], "argument --guidance-scale: must be a finite number, got inf"),
        (["--guidance-scale", "nan"], "argument --guidance-scale: must be a finite number, got nan"),
        (["--steps", "0"], "argument --steps: must be a positive integer, got 0"),
        (["--device", "meta"], "--device meta holds no data"),
        (["--num-images", "100000000"], "asks for 100,000,000 images; one `pixelgen generate` writes at most"),
    ],
)
def test_generate_refuses_bad_options_in_one_line(tmp_path, capsys, model_dir, arguments, fragment):
    code, _, err = run_cli(
        capsys, "generate", "--model", model_dir, "--class", "1", *arguments, "--out", tmp_path / "o"
    )
    assert_one_line(code, err, "generate", fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_generate_on_a_missing_cuda_device_is_one_line(tmp_path, capsys, model_dir):
    code, _, err = run_cli(capsys, "generate", "--model", model_dir, "--class", "1", "--device", "cuda")
    assert_one_line(code, err, "generate", "--device cuda: CUDA is not available on this machine; use --device cpu")


def test_huge_requests_fail_before_anything_is_loaded(tmp_path, capsys):
    # The model does not exist: the size is refused first, without planning or loading anything.
    code, _, err = run_cli(capsys, "generate", "--model", tmp_path / "none", "--class", "1", "--num-images", "10**8")
    assert_one_line(code, err, "generate", "argument --num-images: '10**8' is not an integer")
    code, _, err = run_cli(
        capsys, "sample", "--model", tmp_path / "none", "--out", tmp_path / "s", "--num-samples", 10**8
    )
    assert_one_line(code, err, "sample", "--num-samples asks for 100,000,000 samples; one sample set holds at most")


def test_a_corrupt_model_folder_is_one_line_for_every_command(tmp_path, capsys, model_dir):
    config_path = model_dir / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "hidden_size": "abc"}))
    code, _, err = run_cli(capsys, "generate", "--model", model_dir, "--class", "1", "--out", tmp_path / "o")
    assert_one_line(code, err, "generate", "hidden_size must be a positive integer, got 'abc'")
    config_path.write_text(json.dumps(config))
    (model_dir / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00" + b"junk" * 10)
    code, _, err = run_cli(capsys, "export", model_dir, tmp_path / "exported")
    assert_one_line(code, err, "export", f"cannot read the weights in {model_dir}")
    assert not (tmp_path / "exported").exists()


def test_convert_of_random_bytes_or_a_yaml_file_is_one_line(tmp_path, capsys):
    (tmp_path / "random.ckpt").write_bytes(bytes(range(7, 256)) * 4)
    code, _, err = run_cli(capsys, "convert", tmp_path / "random.ckpt", tmp_path / "out")
    assert_one_line(code, err, "convert", "random.ckpt is not a PyTorch checkpoint")
    (tmp_path / "config.yaml").write_text("model:\n  denoiser:\n    class_path: src.models.transformer.JiT.JiT\n")
    code, _, err = run_cli(capsys, "convert", tmp_path / "config.yaml", tmp_path / "out")
    assert_one_line(code, err, "convert", "an upstream YAML config goes to --config")


@pytest.fixture
def data_dir(tmp_path):
    write_tiny_image_folder(tmp_path / "data", num_classes=2, per_class=2, size=36)
    return tmp_path / "data"


TRAIN = ["--sample-size", "32", "--batch-size", "2", "--num-workers", "0", "--sample-every", "100"]
TRAIN += ["--checkpoint-every", "2", "--num-inference-steps", "2", "--model-config", json.dumps(TINY_TRAIN_MODEL)]


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--learning-rate", "inf"], "learning_rate (--learning-rate) must be a finite number > 0, got inf"),
        (["--max-grad-norm", "nan"], "max_grad_norm (--max-grad-norm) must be a finite number >= 0, got nan"),
        (["--sample-size", "0"], "sample_size (--sample-size) must be a positive integer, got 0"),
        (
            ["--checkpoints-total-limit", "-1"],
            "checkpoints_total_limit (--checkpoints-total-limit) must be a positive",
        ),
        (["--guidance-scale", "nan"], "guidance_scale (--guidance-scale) must be a finite number, got nan"),
        (
            ["--model-config", '{"unknown_key": 1}'],
            "model_config has 'unknown_key', which is not a PixelGenTransformer",
        ),
        (["--labels-file", "LIST"], "holds a JSON list; expected an object"),
    ],
)
def test_train_refuses_bad_flags_in_one_line_before_any_work(tmp_path, capsys, data_dir, arguments, fragment):
    (tmp_path / "labels.json").write_text('["a.png", "b.png"]')
    arguments = [str(tmp_path / "labels.json") if value == "LIST" else value for value in arguments]
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", data_dir, "--output-dir", out, *TRAIN, *arguments)
    assert_one_line(code, err, "train", fragment)
    assert not list(out.glob("checkpoint-*")) and not (out / "train_log.jsonl").exists()


def test_out_of_memory_and_a_full_disk_are_one_line_with_what_to_do(tmp_path, capsys, model_dir, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn", out_of_memory)
        code, _, err = run_cli(capsys, "generate", "--model", model_dir, "--class", "1", "--out", tmp_path / "o")
    assert_one_line(code, err, "generate", "out of memory (CUDA out of memory", status=1)
    assert "try a smaller --batch-size" in err

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    code, _, err = run_cli(capsys, "generate", "--model", model_dir, "--class", "1", "--out", tmp_path / "full")
    assert_one_line(code, err, "generate", "cannot write", status=1)
    assert "No space left on device; free some disk space" in err
    assert list((tmp_path / "full").iterdir()) == []  # no 0-byte PNG at its final name, no temporary file


def test_a_traceback_only_with_debug_or_pixelgen_debug(tmp_path, capsys, monkeypatch):
    from pixelgen_diffusers.conversion.model_folder import ModelFolderError

    arguments = ["generate", "--model", str(tmp_path / "missing"), "--class", "1"]
    assert_one_line(
        *run_cli(capsys, *arguments)[::2], "generate", f"model folder {tmp_path / 'missing'} does not exist"
    )
    with pytest.raises(ModelFolderError):  # the exception propagates: Python prints the traceback
        cli.main(["--debug", *arguments])
    with pytest.raises(ModelFolderError):
        cli.main([*arguments, "--debug"])
    monkeypatch.setenv("PIXELGEN_DEBUG", "1")
    with pytest.raises(ModelFolderError):
        cli.main(arguments)


# ------------------------------------------------------------------------------------------- 4. atomic writes
def test_atomic_write_leaves_the_old_file_on_failure_and_replaces_links_without_following_them(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as file:
            file.write(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(path.name for path in tmp_path.iterdir()) == ["file.json"]

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (tmp_path / "link.png").symlink_to(outside / "precious")
    atomic_write_bytes(tmp_path / "link.png", b"new")
    assert (outside / "precious").read_text() == "keep"
    assert not (tmp_path / "link.png").is_symlink() and (tmp_path / "link.png").read_bytes() == b"new"


def test_sample_never_writes_through_planted_links_and_redraws_truncated_pngs(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "samples"
    out.mkdir()
    # Links at every temporary name the sampler used to write (fixed names), pointing outside the folder.
    for name in (".000000.png.tmp", ".000001.png.tmp", ".sampling_config.json.tmp", ".samples.npz.tmp"):
        (outside / name).write_text("precious")
        (out / name).symlink_to(outside / name)
    before = outside_files(outside)
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, out, num_samples=4, batch_size=4, **SETTINGS)
    assert outside_files(outside) == before
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]
    complete = (out / "000002.png").read_bytes()

    (out / "000002.png").write_bytes(complete[: len(complete) // 2])  # a crash or a full disk cut it short
    (out / "000003.png").write_bytes(b"")
    sample_many(pipe, out, num_samples=4, batch_size=4, **SETTINGS)
    assert (out / "000002.png").read_bytes() == complete
    assert PIL.Image.open(out / "000003.png").size == (32, 32)


def test_a_failed_npz_pack_keeps_the_previous_samples_npz(tmp_path, monkeypatch):
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, tmp_path, num_samples=3, batch_size=3, **SETTINGS)
    packed = (tmp_path / "samples.npz").read_bytes()

    def write_then_disk_full(stream, array, **options):  # numpy's writer of one array of the npz
        stream.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", write_then_disk_full)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'samples.npz'}: No space left on device"):
        sample_many(pipe, tmp_path, num_samples=3, batch_size=3, **SETTINGS)
    assert (tmp_path / "samples.npz").read_bytes() == packed
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def _config(tmp_path, output="run", **overrides) -> TrainingConfig:
    data = tmp_path / "data"
    if not data.exists():
        write_tiny_image_folder(data, num_classes=2, per_class=2, size=36)
    values = dict(
        data_dir=str(data),
        output_dir=str(tmp_path / output),
        sample_size=32,
        model_config=TINY_TRAIN_MODEL,
        batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        num_workers=0,
        sample_every=100,
        checkpoint_every=2,
        num_inference_steps=2,
    )
    return TrainingConfig(**{**values, **overrides})


def test_train_never_writes_a_checkpoint_through_planted_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / ".tmp-checkpoint-2").symlink_to(outside, target_is_directory=True)  # the old fixed temporary name
    (run / "checkpoint-2").symlink_to(outside, target_is_directory=True)  # a link at the final name itself
    checkpoint = train(_config(tmp_path))
    assert list(outside.iterdir()) == []
    assert checkpoint == run / "checkpoint-2" and not checkpoint.is_symlink()
    assert (checkpoint / "training_state" / "state.json").is_file()


# -------------------------------------------------------------------------------------- 5. one run per folder
def test_a_second_run_into_a_locked_folder_refuses_naming_the_other_process_and_a_crash_frees_it(
    tmp_path, model_dir, capsys
):
    from pixelgen_diffusers.cli.sample import is_complete_png

    out = tmp_path / "samples"
    command = [sys.executable, "-m", "pixelgen_diffusers.cli", "sample", "--model", str(model_dir), "--out", str(out)]
    command += ["--num-samples", "100000", "--batch-size", "1", "--steps", "20", "--no-npz"]
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        owner = out / FolderLock.OWNER_FILE
        deadline = time.monotonic() + 240
        while not owner.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert owner.is_file(), "the first run never took the lock"
        code, _, err = run_cli(capsys, "sample", "--model", model_dir, "--out", out, "--num-samples", "2")
        assert_one_line(
            code, err, "sample", f"{out} is in use by another run (pixelgen sample, process {first.pid} on"
        )
        with pytest.raises(ValueError, match=f"is in use by another run .*process {first.pid}"):
            train(_config(tmp_path, output="samples"))
        time.sleep(1)  # let it write a few samples
    finally:
        first.kill()  # a crash (SIGKILL): no clean release, possibly mid-write
        first.wait()
    FolderLock(out, "sample").acquire().release()  # the lock died with the process
    written = sorted(out.glob("*.png"))
    assert all(is_complete_png(path) for path in written)  # killed mid-run: no half-written PNG at a final name


def test_the_lock_is_released_on_exit_and_refuses_a_planted_link(tmp_path):
    with FolderLock(tmp_path / "run", "train"):
        with pytest.raises(ValueError, match="in use by another run .pixelgen train, process"):
            FolderLock(tmp_path / "run", "train").acquire()
    FolderLock(tmp_path / "run", "train").acquire().release()  # released on exit
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".pixelgen.lock").symlink_to(tmp_path / "precious")
    with pytest.raises(ValueError, match="is a symbolic link"):
        FolderLock(tmp_path / "other", "sample").acquire()
    assert not (tmp_path / "precious").exists()


# ------------------------------------------------------------------------------------------- 6. training state
def test_resuming_an_older_checkpoint_applies_changed_settings_and_replaces_later_checkpoints(tmp_path):
    first = train(_config(tmp_path, max_steps=4))
    old_weights = load_file(first / "transformer" / "diffusion_pytorch_model.safetensors")
    resumed = train(
        _config(tmp_path, max_steps=4, resume=str(tmp_path / "run" / "checkpoint-2"), learning_rate=0.01,
                checkpoints_total_limit=1)
    )  # fmt: skip
    assert resumed == first
    # The printed final checkpoint holds this run's weights, trained at the new rate, and says so.
    new_weights = load_file(resumed / "transformer" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(old_weights[key], new_weights[key]) for key in old_weights)
    optimizer = torch.load(resumed / "training_state" / "optimizer.pt", weights_only=True)
    assert [group["lr"] for group in optimizer["param_groups"]] == [0.01]
    assert json.loads((resumed / "training_state" / "state.json").read_text())["config"]["learning_rate"] == 0.01
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    (resumed_record,) = [record for record in log if "resumed_from" in record]
    assert resumed_record["step"] == 2 and resumed_record["resumed_from"] == str(tmp_path / "run" / "checkpoint-2")
    assert resumed_record["changed"]["learning_rate"] == [0.001, 0.01]
    # checkpoints_total_limit=1 kept the checkpoint just written, the one named final.
    assert sorted(path.name for path in (tmp_path / "run").iterdir() if path.name.startswith("checkpoint")) == [
        "checkpoint-4"
    ]


def test_resume_needs_only_the_folder_and_refuses_another_architecture(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    model_config = {**TINY_TRAIN_MODEL, "depth": 2}
    arguments = [*TRAIN[:-1], json.dumps(model_config), "--max-steps", "2", "--learning-rate", "0.002"]
    assert run_cli(capsys, "train", "--data-dir", data_dir, "--output-dir", out, *arguments)[0] == 0
    code, out_text, err = run_cli(capsys, "train", "--output-dir", out, "--resume", "latest", "--max-steps", "4")
    assert code == 0, err
    assert f"Final checkpoint: {out / 'checkpoint-4'}" in out_text
    recorded = json.loads((out / "checkpoint-4" / "training_state" / "state.json").read_text())["config"]
    assert recorded["model_config"] == model_config and recorded["learning_rate"] == 0.002
    assert recorded["data_dir"] == str(data_dir) and recorded["max_steps"] == 4

    other = json.dumps({**model_config, "depth": 3})
    code, _, err = run_cli(capsys, "train", "--output-dir", out, "--resume", "latest", "--model-config", other)
    assert_one_line(code, err, "train", "but the checkpoint's run has {'patch_size': 8")
    assert "a resume keeps the architecture and the seed" in err
    code, _, err = run_cli(capsys, "train", "--output-dir", out, "--resume", "latest", "--seed", "1")
    assert_one_line(code, err, "train", "seed (--seed) is 1, but the checkpoint's run has 0")
    code, _, err = run_cli(capsys, "train", "--output-dir", out, "--resume", "latest", "--max-steps", "2")
    assert_one_line(code, err, "train", "is at step 4, beyond max_steps (--max-steps) 2")


def test_a_diverging_run_stops_with_one_line_and_writes_no_nan_checkpoint(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    arguments = [*TRAIN, "--max-steps", "4", "--log-every", "1", "--learning-rate", "1e30", "--ema-decay", "0"]
    code, _, err = run_cli(capsys, "train", "--data-dir", data_dir, "--output-dir", out, *arguments)
    assert_one_line(code, err, "train", "training diverged: the ", status=1)
    assert not list(out.glob("checkpoint-*"))


def test_resuming_from_a_truncated_optimizer_state_is_one_line(tmp_path, capsys):
    checkpoint = train(_config(tmp_path))
    optimizer = checkpoint / "training_state" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    code, _, err = run_cli(capsys, "train", "--output-dir", tmp_path / "run", "--resume", "latest", "--max-steps", "4")
    assert_one_line(code, err, "train", f"cannot resume from {checkpoint}")
    assert "resume from an earlier checkpoint" in err


# ------------------------------------------------------------------------------------ 7. the batch-size guarantee
def test_a_sample_set_is_bitwise_for_one_batch_size_and_within_one_level_across_batch_sizes(tmp_path):
    pipe = tiny_c2i_pipeline()
    sets = {}
    for name, batch_size in (("a3", 3), ("b3", 3), ("a8", 8)):
        sample_many(pipe, tmp_path / name, num_samples=8, batch_size=batch_size, **SETTINGS)
        sets[name] = np.load(tmp_path / name / "samples.npz")["arr_0"].astype(int)
    np.testing.assert_array_equal(sets["a3"], sets["b3"])
    assert np.abs(sets["a3"] - sets["a8"]).max() <= 1
