"""`pixelgen sample`: evaluation sets that depend only on the sample index (not batch size, not process count)."""

import os
import subprocess
import sys

import numpy as np
import torch
from components import tiny_c2i_pipeline

from pixelgen_diffusers.sample import sample_many


SETTINGS = dict(num_inference_steps=2, guidance_scale=2.0)


def test_samples_are_class_balanced_seeded_per_index_and_packed(tmp_path):
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, tmp_path, num_samples=13, seed=5, batch_size=4, **SETTINGS)
    packed = np.load(tmp_path / "samples.npz")
    assert packed["arr_0"].shape == (13, 32, 32, 3) and packed["arr_0"].dtype == np.uint8
    assert packed["arr_1"].tolist() == [i % 10 for i in range(13)]
    single = pipe(11 % 10, generator=torch.Generator().manual_seed(5 + 11), **SETTINGS).images[0]
    np.testing.assert_array_equal(packed["arr_0"][11], np.asarray(single))


def test_a_stopped_run_resumes_without_redoing_finished_samples(tmp_path):
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, tmp_path, num_samples=6, batch_size=6, pack=False, **SETTINGS)
    before = (tmp_path / "000003.png").read_bytes()
    (tmp_path / "000003.png").unlink()
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    sample_many(pipe, tmp_path, num_samples=6, batch_size=6, **SETTINGS)
    assert max(rows) <= 2  # one sample (doubled for guidance) was recomputed, not six
    assert (tmp_path / "000003.png").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_two_processes_write_the_same_set_as_one(tmp_path):
    pipe = tiny_c2i_pipeline()
    model_dir = tmp_path / "model"
    pipe.save_pretrained(model_dir)
    arguments = ["--model", str(model_dir), "--num-samples", "6", "--batch-size", "2", "--steps", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    for name, prefix in (("one", [sys.executable]), ("two", launcher)):
        command = [*prefix, "-m", "pixelgen_diffusers.cli", "sample", *arguments, "--out", str(tmp_path / name)]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    one, two = np.load(tmp_path / "one" / "samples.npz"), np.load(tmp_path / "two" / "samples.npz")
    np.testing.assert_array_equal(one["arr_0"], two["arr_0"])
