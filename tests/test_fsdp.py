"""FSDP2 (training/distributed.py, `pixelgen train --fsdp`) on two real gloo processes: the sharded run trains exactly
what one process trains on the full batch, and its distributed checkpoint resumes on one process and continues
identically."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch
from components import TINY_TRAIN_MODEL, write_tiny_image_folder
from fsdp_worker import build, full_weights, train_steps
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

import pixelgen_diffusers
from pixelgen_diffusers import PixelGenC2IPipeline, load_pipeline
from pixelgen_diffusers.cli import main
from pixelgen_diffusers.training.distributed import load_sharded_checkpoint


TESTS = Path(__file__).parent
# The gradients are float32 sums of the same terms in other orders (a half batch per process, averaged by the
# collective): a few ulps apart, but an element whose gradient nearly cancels differs relatively by much more, and
# Adam moves every element by about lr whatever its gradient's size, so one step can differ by up to ~lr * 1e-3.
# With lr = 1e-4, four steps differ by < 2e-7 (measured 1.8e-7 after two; 1.8e-6 with lr = 1e-3): the 1e-6 bound.
TOLERANCE = dict(rtol=0.0, atol=1e-6)


def free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def test_fsdp2_on_two_processes_trains_like_one_process_and_its_checkpoint_resumes_on_one(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    command += [str(free_port())]
    command += [str(TESTS / "fsdp_worker.py"), str(tmp_path), "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Two processes ran, each in a group of two (each says so itself).
    assert "process 0: world size 2" in result.stdout and "process 1: world size 2" in result.stdout
    assert sorted(path.name for path in (tmp_path / "checkpoint").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    model, optimizer, emas = build(sharded=False)  # one process, the full batch
    train_steps(model, optimizer, emas, 0, 2)
    sharded = torch.load(tmp_path / "weights.pt", weights_only=True)
    reference = full_weights(model, emas)
    assert sharded.keys() == reference.keys()
    initial = build(sharded=False)[0].state_dict()
    moved = max((reference[f"model.{name}"] - tensor).abs().max() for name, tensor in initial.items())
    assert moved > 1e-4  # the steps moved the weights far more than the tolerance
    for name, tensor in reference.items():
        torch.testing.assert_close(sharded[name], tensor, **TOLERANCE, msg=name)

    # The checkpoint of the two processes, resharded onto one, continues as the one-process run continues.
    resumed, resumed_optimizer, resumed_emas = build(sharded=False)
    load_sharded_checkpoint(tmp_path / "checkpoint", resumed, resumed_optimizer, resumed_emas)
    train_steps(resumed, resumed_optimizer, resumed_emas, 2, 4)
    train_steps(model, optimizer, emas, 2, 4)
    continued, expected = full_weights(resumed, resumed_emas), full_weights(model, emas)
    for name, tensor in expected.items():
        torch.testing.assert_close(continued[name], tensor, **TOLERANCE, msg=name)


# `pixelgen train`'s objective draws each process's times and noise from its own stream (seed + 1 + rank), so runs on
# different numbers of processes draw different noise. These settings make the draws irrelevant, so that two processes
# with half batches see exactly one process's full batch: t = sigmoid(p_mean) whatever the draw (p_std 1e-30), noise
# below float32's resolution next to the images (noise_scale 1e-30), no label dropout; the tiny model has no dropout.
TRAIN = ["--sample-size", "32", "--model-config", json.dumps(TINY_TRAIN_MODEL), "--learning-rate", "1e-4"]
TRAIN += ["--ema-decay", "0.5", "--num-workers", "0", "--log-every", "1", "--sample-every", "2"]
TRAIN += ["--checkpoint-every", "2", "--num-inference-steps", "2", "--label-dropout", "0", "--p-std", "1e-30"]
TRAIN += ["--noise-scale", "1e-30"]


def sharded_state(checkpoint) -> dict:
    """A --fsdp checkpoint's online weights, optimizer state and EMAs, merged into one process's tensors."""
    merged = checkpoint / "merged.pt"
    dcp_to_torch_save(checkpoint / "training_state" / "sharded", merged)
    state = torch.load(merged, weights_only=True)
    merged.unlink()
    return state


def pipeline_files(checkpoint) -> set:
    """The files of a checkpoint folder, without its training state."""
    files = {path.relative_to(checkpoint) for path in checkpoint.rglob("*") if path.is_file()}
    return {path for path in files if path.parts[0] != "training_state"}


def assert_close_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, **TOLERANCE, msg=name)


def test_pixelgen_train_fsdp_on_two_processes_trains_like_one_and_its_checkpoint_resumes_on_one(tmp_path):
    data = write_tiny_image_folder(tmp_path / "data", num_classes=2, per_class=4, size=36)
    # One process, the full batch of 4, straight through 4 steps (DDP's checkpoint format).
    straight = tmp_path / "straight"
    arguments = ["train", "--data-dir", str(data), *TRAIN, "--batch-size", "4", "--max-steps", "4"]
    assert main([*arguments, "--output-dir", str(straight)]) == 0

    # Two processes with half batches, sharded, 2 steps; each process's output to its own file.
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    command += [str(free_port()), "--log-dir", str(tmp_path / "logs"), "--redirects", "3"]
    command += ["-m", "pixelgen_diffusers.cli", "train"]
    command += ["--data-dir", str(data), *TRAIN, "--batch-size", "2", "--max-steps", "2"]
    command += ["--output-dir", str(tmp_path / "fsdp"), "--fsdp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):  # each process says it is one of two and holds only part of the weights
        [log] = (tmp_path / "logs").glob(f"*/attempt_0/{rank}/stdout.log")
        [match] = re.findall(rf"^Process {rank} of 2: FSDP2, ([\d,]+) of ([\d,]+) weights", log.read_text(), re.M)
        held, total = (int(number.replace(",", "")) for number in match)
        assert 0 < held < total
    checkpoint = tmp_path / "fsdp" / "checkpoint-2"
    state = json.loads((checkpoint / "training_state" / "state.json").read_text())
    assert state["num_processes"] == 2 and state["config"]["fsdp"]
    shards = sorted(path.name for path in (checkpoint / "training_state" / "sharded").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    assert (tmp_path / "fsdp" / "samples" / "step-0000002.png").is_file()  # drawn from the gathered EMA

    # (1) The same weights as one process after 2 steps: the online ones, and the EMA the pipeline folder holds.
    sharded = sharded_state(checkpoint)
    reference = load_file(straight / "checkpoint-2/training_state/model.safetensors")
    later = load_file(straight / "checkpoint-4/training_state/model.safetensors")
    assert max((reference[name] - later[name]).abs().max() for name in later) > 1e-4  # 2 steps move far more than 1e-6
    assert_close_weights(sharded["model"], reference)
    ema_file = "transformer/diffusion_pytorch_model.safetensors"
    assert_close_weights(load_file(checkpoint / ema_file), load_file(straight / "checkpoint-2" / ema_file))

    # (3) The checkpoint folder is a pipeline folder like the one-process run's, and draws the same images.
    assert pipeline_files(checkpoint) == pipeline_files(straight / "checkpoint-2")
    pipeline = load_pipeline(checkpoint)
    assert isinstance(pipeline, PixelGenC2IPipeline) and pipeline.id2label == {0: "class_0", 1: "class_1"}
    images = [
        load_pipeline(folder)([0, 1], generator=torch.Generator().manual_seed(0), output_type="np").images
        for folder in (checkpoint, straight / "checkpoint-2")
    ]
    torch.testing.assert_close(torch.from_numpy(images[0]), torch.from_numpy(images[1]), rtol=0, atol=1e-5)

    # (2) Resumed on one process with the full batch, it continues as the uninterrupted run.
    resumed = ["train", "--output-dir", str(tmp_path / "fsdp"), "--resume", "latest", "--batch-size", "4"]
    assert main([*resumed, "--max-steps", "4"]) == 0
    continued = sharded_state(tmp_path / "fsdp" / "checkpoint-4")
    assert_close_weights(continued["model"], later)
    assert_close_weights(continued["ema_0"], load_file(straight / "checkpoint-4" / ema_file))


def test_fsdp_with_lora_is_a_one_line_error(tmp_path, capsys):
    demo = Path(pixelgen_diffusers.__file__).parent / "demo" / "model"
    arguments = ["train", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--fsdp"]
    assert main([*arguments, "--pretrained", str(demo), "--lora-rank", "4"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "fsdp (--fsdp) shards full fine-tunes" in error
    assert not (tmp_path / "out").exists()
