"""FSDP2 (training/distributed.py) on two real gloo processes: the sharded run trains exactly what one process trains
on the full batch, and its distributed checkpoint resumes on one process and continues identically."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from fsdp_worker import build, full_weights, train_steps

from pixelgen_diffusers.training.distributed import load_sharded_checkpoint


TESTS = Path(__file__).parent
# The gradients are float32 sums of the same terms in other orders (a half batch per process, averaged by the
# collective): a few ulps apart, but an element whose gradient nearly cancels differs relatively by much more, and
# Adam moves every element by about lr whatever its gradient's size, so one step can differ by up to ~lr * 1e-3.
# With lr = 1e-4, four steps differ by < 2e-7 (measured 1.8e-7 after two; 1.8e-6 with lr = 1e-3): the 1e-6 bound.
TOLERANCE = dict(rtol=0.0, atol=1e-6)


def test_fsdp2_on_two_processes_trains_like_one_process_and_its_checkpoint_resumes_on_one(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
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
