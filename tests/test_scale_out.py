"""`pixelgen sample` launched as a user would on several processes and "nodes" (CPU, gloo, loopback only): every
process draws its share, the shares make the one-process set byte for byte, a killed process resumes, and folders not
shared between nodes merge with `pixelgen pack`.

Every run draws with batch size 1, so each sample is literally the same computation in every layout, and with
MKL_CBWR=AUTO,STRICT, so that MKL's results do not depend on memory alignment (which differs between processes).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from components import TINY_TRAIN_MODEL, tiny_c2i_pipeline, write_tiny_image_folder

from pixelgen_diffusers.cli import main
from pixelgen_diffusers.cli.pack import find_shards, merge_shards
from pixelgen_diffusers.cli.sample import write_npz
from pixelgen_diffusers.utils import FolderLock
from pixelgen_diffusers.utils.distributed import launch_state


NUM_SAMPLES = 24
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_CBWR": "AUTO,STRICT"}
CLI = ["-m", "pixelgen_diffusers.cli", "sample", "--num-samples", str(NUM_SAMPLES), "--batch-size", "1"]
CLI += ["--steps", "2"]


def free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def node_command(model_dir, out, node_rank: int, port: int, *extra: str) -> list[str]:
    """One of two torchrun "nodes" on the loopback interface, one process each."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank)]
    torchrun += ["--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    return [*torchrun, *CLI, "--model", str(model_dir), "--out", str(out), *extra]


def run_two_nodes(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    nodes = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [node.communicate(timeout=300) for node in nodes]
    return [subprocess.CompletedProcess(node.args, node.returncode, *output) for node, output in zip(nodes, outputs)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_c2i_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_process_npz(model_dir, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("one")
    result = subprocess.run(
        [sys.executable, *CLI, "--model", str(model_dir), "--out", str(out)], env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Drew {NUM_SAMPLES} samples on 1 process\n" in result.stdout
    return (out / "samples.npz").read_bytes()


def test_two_nodes_without_a_shared_folder_each_draw_half_and_pack_merges_them(model_dir, one_process_npz, tmp_path):
    port = free_port()
    folders = [tmp_path / "node0", tmp_path / "node1"]  # no folder holds both shares: no shared filesystem
    results = run_two_nodes([node_command(model_dir, folders[rank], rank, port) for rank in (0, 1)])
    for rank, result in enumerate(results):
        assert result.returncode == 0, result.stderr[-2000:]
        # Each process's own output says it was one of two and drew half the set.
        assert f"Process {rank} of 2: {NUM_SAMPLES // 2} samples in {folders[rank]}" in result.stdout
        recorded = json.loads((folders[rank] / "sampling_config.json").read_text())["processes"]
        assert recorded == {"world_size": 2, "samples_per_process": [NUM_SAMPLES // 2] * 2}
        drawn = sorted(int(path.stem) for path in folders[rank].glob("[0-9]*.png"))
        assert drawn == list(range(rank, NUM_SAMPLES, 2))
        assert not (folders[rank] / "samples.npz").exists()
    assert f"Drew {NUM_SAMPLES} samples on 2 processes" in results[0].stdout
    assert "not shared by the processes (separate folders for process 0 | process 1)" in results[0].stdout

    assert main(["pack", *map(str, folders), "--out", str(tmp_path / "samples.npz")]) == 0
    assert (tmp_path / "samples.npz").read_bytes() == one_process_npz

    # Shards of one process only, one process twice, or of another run are refused, and nothing is written.
    shard0, shard1 = folders[0] / "samples.rank0.npz", folders[1] / "samples.rank1.npz"
    with np.load(shard1) as shard:
        other_run = {name: shard[name] for name in shard.files}
    settings = json.loads(other_run["settings"].item())
    other_run["settings"] = np.array(json.dumps({**settings, "seed": 7}, sort_keys=True))
    (tmp_path / "other").mkdir()
    write_npz(tmp_path / "other" / "samples.rank1.npz", other_run)
    for inputs, message in (
        ([folders[0]], r"the shards of process\(es\) 1 of 2 are missing"),
        ([folders[0], shard0, shard1], "both hold process 0's shard"),
        ([folders[0], tmp_path / "other"], "is a shard of another run than .* \\(other seed\\)"),
    ):
        with pytest.raises(ValueError, match=message):
            merge_shards(find_shards(inputs), tmp_path / "refused.npz")
        assert not (tmp_path / "refused.npz").exists()


def test_a_process_started_with_other_settings_stops_every_process_in_one_line(model_dir, tmp_path):
    port = free_port()
    folder = tmp_path / "out"
    commands = [node_command(model_dir, folder, 0, port), node_command(model_dir, folder, 1, port, "--seed", "3")]
    for result in run_two_nodes(commands):
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("pixelgen sample: error:")]
        assert len(errors) == 1, result.stderr[-2000:]
        assert "runs with other settings than process 0: seed is" in errors[0]
    assert not list(folder.glob("*.png")) and not (folder / "sampling_config.json").exists()  # nothing written


def test_a_killed_process_resumes_every_process_to_the_one_process_bytes(model_dir, one_process_npz, tmp_path):
    out = tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    arguments = [*CLI, "--model", str(model_dir), "--out", str(out)]
    command = [*torchrun, "--master-port", str(free_port()), *arguments]
    launcher = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "000001.png").exists():  # process 1 draws the odd samples; kill it after its first one
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before process 1 drew"
            time.sleep(0.02)
        [process_1] = [
            child for child in psutil.Process(launcher.pid).children() if child.environ().get("RANK") == "1"
        ]
        os.kill(process_1.pid, signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0  # torchrun stops the other process and fails
    finally:
        if launcher.poll() is None:
            launcher.kill()
    odd = [out / f"{i:06d}.png" for i in range(1, NUM_SAMPLES, 2)]
    assert not all(path.exists() for path in odd) and not (out / "samples.npz").exists()  # killed mid-run
    kept = {path.name: path.stat().st_ino for path in out.glob("[0-9]*.png")}

    # The same command again, each process's output to its own file (torchrun --redirects).
    logs = tmp_path / "logs"
    command = [*torchrun, "--master-port", str(free_port()), "--log-dir", str(logs), "--redirects", "3", *arguments]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "samples.npz").read_bytes() == one_process_npz
    assert {name: (out / name).stat().st_ino for name in kept} == kept  # finished samples were kept, not redrawn
    for rank in (0, 1):  # each process's own output says it was one of two and took half the set
        [log] = logs.glob(f"*/attempt_0/{rank}/stdout.log")
        assert f"Process {rank} of 2: {NUM_SAMPLES // 2} samples in {out}" in log.read_text()
    recorded = json.loads((out / "sampling_config.json").read_text())["processes"]
    assert recorded == {"world_size": 2, "samples_per_process": [NUM_SAMPLES // 2] * 2}


def test_a_stale_world_size_is_a_one_line_error_before_any_work(monkeypatch, tmp_path, capsys):
    """A process that joined a group of another size than its launcher's WORLD_SIZE (here: one started by hand with
    a WORLD_SIZE left over) would draw a wrong share: refused before the model is loaded."""
    launch_state()  # this test process: one process, no launcher
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sample", "--num-samples", "2", "--steps", "2", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the launcher set WORLD_SIZE=2, but this process joined a group of 1" in error
    assert not (tmp_path / "out").exists()


def test_training_on_two_accelerate_machines_on_loopback_runs_two_processes(tmp_path):
    """`accelerate launch --num_machines 2 --machine_rank R --main_process_ip` (two launches, one process each, the
    CPU over gloo): the two "machines" train together, each in a group of two."""
    write_tiny_image_folder(tmp_path / "data", num_classes=2, per_class=4, size=36)
    port = free_port()
    commands = []
    for machine_rank in (0, 1):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2"]
        command += ["--machine_rank", str(machine_rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1"]
        command += ["--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += ["-m", "pixelgen_diffusers.cli", "train", "--data-dir", str(tmp_path / "data"), "--output-dir"]
        command += [str(tmp_path / "run"), "--sample-size", "32", "--model-config", json.dumps(TINY_TRAIN_MODEL)]
        command += ["--batch-size", "2", "--max-steps", "2", "--num-workers", "0", "--checkpoint-every", "2"]
        command += ["--num-inference-steps", "2"]
        commands.append(command)
    nodes = [
        subprocess.Popen(c, env={**ENV, "ACCELERATE_USE_CPU": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr.decode()[-3000:]
    state_dir = tmp_path / "run" / "checkpoint-2" / "training_state"
    assert json.loads((state_dir / "state.json").read_text())["num_processes"] == 2  # as the main process saw it
    assert (state_dir / "rng_state_1.pt").is_file()  # written by the process of the second machine


def test_a_folder_in_use_refuses_every_process_of_a_second_run(model_dir, tmp_path):
    out = tmp_path / "out"
    with FolderLock(out, "sample"):  # a first run holds the folder
        logs = tmp_path / "logs"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
        command += [str(free_port()), "--log-dir", str(logs), "--redirects", "3", *CLI, "--model", str(model_dir)]
        result = subprocess.run([*command, "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    for rank in (0, 1):  # each process's own error output: one line
        [log] = logs.glob(f"*/attempt_0/{rank}/stderr.log")
        errors = [line for line in log.read_text().splitlines() if line.startswith("pixelgen sample: error:")]
        holder = f"{out} is in use by another run (pixelgen sample, process {os.getpid()}"
        assert len(errors) == 1 and holder in errors[0]
    assert sorted(path.name for path in out.iterdir()) == [".pixelgen.lock"]  # nothing else written
