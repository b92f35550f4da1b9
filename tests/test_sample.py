"""`pixelgen sample`: evaluation sets that depend only on the sample index (not batch size, not process count)."""

import json
import os
import socket
import subprocess
import sys
import tracemalloc

import numpy as np
import PIL.Image
import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline

from pixelgen_diffusers.cli.sample import pack_npz, sample_many


SETTINGS = dict(num_inference_steps=2, guidance_scale=2.0)
# SETTINGS with the tiny pipeline's defaults filled in: what a run records.
EFFECTIVE = dict(
    SETTINGS, guidance_interval_min=0.0, guidance_interval_max=1.0, noise_scale=1.0, sampling_method="heun",
    timeshift=2.0, solver_order=2,
)  # fmt: skip


# How the run ran, recorded beside the settings (not a setting: a run may resume with another number of processes).
ONE_PROCESS = {"processes": {"world_size": 1, "samples_per_process": [2]}}


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
    """`accelerate launch --multi_gpu` (accelerate's torchrun) with ACCELERATE_USE_CPU=1 starts two processes that
    join over gloo; each says in its own output that it is one of two, and they draw the bytes one process draws."""
    pipe = tiny_c2i_pipeline()
    model_dir = tmp_path / "model"
    pipe.save_pretrained(model_dir)
    # Batch size 1: every sample is literally the same computation in both runs; MKL_CBWR: MKL's results then do not
    # depend on the memory alignment, which differs between processes.
    arguments = ["--model", str(model_dir), "--num-samples", "6", "--batch-size", "1", "--steps", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_CBWR": "AUTO,STRICT"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no"]
    launcher += ["--dynamo_backend", "no"]
    outputs = {}
    for name, prefix, extra_env in (("one", [sys.executable], {}), ("two", launcher, {"ACCELERATE_USE_CPU": "1"})):
        command = [*prefix, "-m", "pixelgen_diffusers.cli", "sample", *arguments, "--out", str(tmp_path / name)]
        result = subprocess.run(command, env=env | extra_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[name] = result.stdout
    assert "Drew 6 samples on 1 process\n" in outputs["one"]
    assert "Process 0 of 2: 3 samples" in outputs["two"] and "Process 1 of 2: 3 samples" in outputs["two"]
    assert outputs["two"].count("Drew 6 samples on 2 processes") == 1  # the main process only
    assert (tmp_path / "one" / "samples.npz").read_bytes() == (tmp_path / "two" / "samples.npz").read_bytes()
    # Both recorded the same settings; the two-process run also its two shares.
    recorded = [json.loads((tmp_path / name / "sampling_config.json").read_text()) for name in ("one", "two")]
    assert recorded[1].pop("processes") == {"world_size": 2, "samples_per_process": [3, 3]}
    assert recorded[0].pop("processes") == {"world_size": 1, "samples_per_process": [6]}
    assert recorded[0] == recorded[1] and recorded[0]["model"] == str(model_dir.resolve())


def free_port() -> int:
    """A free TCP port on the loopback interface, so that concurrent launches do not collide."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- bad settings
def test_the_model_kind_decides_between_prompts_and_classes_and_a_mismatch_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="text-to-image model: it needs prompts"):
        sample_many(tiny_t2i_pipeline(), tmp_path / "t2i", num_samples=2)
    with pytest.raises(ValueError, match="class-conditional model: prompts .* are for text-to-image models"):
        sample_many(tiny_c2i_pipeline(), tmp_path / "c2i", prompts=["a red square"])
    with pytest.raises(ValueError, match="seed_per_prompt .* is for text-to-image models"):
        sample_many(tiny_c2i_pipeline(), tmp_path / "c2i", num_samples=2, seed_per_prompt=True)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("argument", ["num_samples", "batch_size", "images_per_prompt"])
def test_sizes_must_be_positive_integers(tmp_path, argument):
    option = "--" + argument.replace("_", "-")
    with pytest.raises(ValueError, match=f"{argument} \\({option}\\) must be a positive integer, got 0"):
        sample_many(tiny_t2i_pipeline(), tmp_path, prompts=["a red square"], **{argument: 0})


# ------------------------------------------------------------------------------------------------- resume safety
def test_a_run_records_its_settings_and_a_later_run_with_other_settings_is_refused(tmp_path):
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, tmp_path, num_samples=2, seed=1, batch_size=2, pack=False, **SETTINGS)
    recorded = json.loads((tmp_path / "sampling_config.json").read_text())
    assert recorded == {"model": None, "dtype": "float32", "seed": 1, "num_samples": 2, **EFFECTIVE, **ONE_PROCESS}

    with pytest.raises(ValueError) as error:
        sample_many(pipe, tmp_path, num_samples=2, seed=2, batch_size=2, num_inference_steps=2)
    message = str(error.value)
    assert "\n" not in message and "holds samples made with other settings" in message
    assert "seed (recorded 1, now 2)" in message and "guidance_scale (recorded 2.0, now 1.0)" in message
    assert "num_inference_steps" not in message  # equal fields are not named
    assert not (tmp_path / "samples.npz").exists()

    bfloat16 = tiny_c2i_pipeline()
    bfloat16.transformer.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"dtype \(recorded 'float32', now 'bfloat16'\)"):
        sample_many(bfloat16, tmp_path, num_samples=2, seed=1, batch_size=2, **SETTINGS)
    # The batch size is not a setting of the set: resuming with another one packs the same samples.
    sample_many(pipe, tmp_path, num_samples=2, seed=1, batch_size=1, **SETTINGS)
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape[0] == 2
    assert json.loads((tmp_path / "sampling_config.json").read_text()) == recorded


def test_the_resume_check_compares_effective_settings_so_passing_a_default_explicitly_resumes(tmp_path):
    pipe = tiny_c2i_pipeline(num_inference_steps=2, guidance_scale=3.0)
    sample_many(pipe, tmp_path, num_samples=2, batch_size=2, pack=False)
    sample_many(pipe, tmp_path, num_samples=2, batch_size=2, guidance_scale=3.0, sampling_method="heun")
    assert json.loads((tmp_path / "sampling_config.json").read_text())["guidance_scale"] == 3.0
    with pytest.raises(ValueError, match=r"guidance_scale \(recorded 3.0, now 2.0\)"):
        sample_many(pipe, tmp_path, num_samples=2, batch_size=2, guidance_scale=2.0)


def test_a_larger_num_samples_extends_a_finished_set(tmp_path):
    pipe = tiny_c2i_pipeline()
    sample_many(pipe, tmp_path, num_samples=3, batch_size=3, **SETTINGS)
    first = (tmp_path / "000002.png").read_bytes()
    rows = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    sample_many(pipe, tmp_path, num_samples=5, batch_size=5, **SETTINGS)
    assert max(rows) == 2 * 2  # only the two new samples (doubled for guidance) were computed
    assert (tmp_path / "000002.png").read_bytes() == first
    packed = np.load(tmp_path / "samples.npz")
    assert packed["arr_0"].shape[0] == 5 and packed["arr_1"].tolist() == [0, 1, 2, 3, 4]
    assert json.loads((tmp_path / "sampling_config.json").read_text())["num_samples"] == 5
    extended = np.asarray(pipe(4, generator=torch.Generator().manual_seed(4), **SETTINGS).images[0])
    np.testing.assert_array_equal(packed["arr_0"][4], extended)  # as if the set had been 5 samples from the start
    sample_many(pipe, tmp_path, num_samples=4, batch_size=5, **SETTINGS)  # a smaller one packs a prefix
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape[0] == 4


def test_a_record_left_by_a_run_that_failed_before_its_first_sample_does_not_bind(tmp_path):
    pipe = tiny_c2i_pipeline()

    def interrupt(module, args):
        raise RuntimeError("interrupted")

    handle = pipe.transformer.register_forward_pre_hook(interrupt)
    with pytest.raises(RuntimeError, match="interrupted"):
        sample_many(pipe, tmp_path, num_samples=2, seed=1, **SETTINGS)
    handle.remove()
    assert (tmp_path / "sampling_config.json").is_file() and not list(tmp_path.glob("*.png"))
    sample_many(pipe, tmp_path, num_samples=2, seed=2, pack=False, **SETTINGS)  # other settings: nothing to mix
    assert json.loads((tmp_path / "sampling_config.json").read_text())["seed"] == 2
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_a_folder_with_samples_but_no_recorded_settings_is_refused(tmp_path):
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "000000.png")
    with pytest.raises(ValueError, match="holds samples but no sampling_config.json"):
        sample_many(tiny_c2i_pipeline(), tmp_path, num_samples=2, **SETTINGS)


def test_prompt_runs_record_a_hash_of_the_prompts(tmp_path):
    pipe = tiny_t2i_pipeline(num_inference_steps=2)
    sample_many(pipe, tmp_path, prompts=["a red square"], images_per_prompt=1, pack=False)
    with pytest.raises(ValueError, match="prompts_sha256 .*images_per_prompt \\(recorded 1, now 2\\)"):
        sample_many(pipe, tmp_path, prompts=["a blue square"], images_per_prompt=2)


# -------------------------------------------------------------------------------------------------- text-to-image
def test_seeds_count_over_the_set_or_with_seed_per_prompt_restart_at_seed_for_every_prompt(tmp_path):
    pipe = tiny_t2i_pipeline(num_inference_steps=2)
    prompts = ["a red square", "a blue circle"]
    packed = {}
    for name, seed_per_prompt in (("global", False), ("per_prompt", True)):
        sample_many(
            pipe, tmp_path / name, seed=7, batch_size=4, prompts=prompts, images_per_prompt=2,
            seed_per_prompt=seed_per_prompt,
        )  # fmt: skip
        packed[name] = np.load(tmp_path / name / "samples.npz")["arr_0"].astype(int)
    # Sample 3 is image k=1 of the second prompt: seed 7 + 3 over the set, 7 + 1 per prompt.
    for name, sample_seed in (("global", 7 + 3), ("per_prompt", 7 + 1)):
        expected = pipe(prompt=[prompts[1]], generator=[torch.Generator().manual_seed(sample_seed)]).images[0]
        assert np.abs(packed[name][3] - np.asarray(expected).astype(int)).max() <= 1
    # The first prompt's images (k = i) have the same seeds either way; the second prompt's do not.
    assert np.abs(packed["global"][:2] - packed["per_prompt"][:2]).max() <= 1
    assert np.abs(packed["global"][2:] - packed["per_prompt"][2:]).max() > 1


# ---------------------------------------------------------------------------------------------------------- packing
def test_packing_fills_one_preallocated_array_instead_of_stacking_a_list(tmp_path):
    """A list of decoded images plus their stacked copy needs twice the array's memory; filling one array needs it
    once (np.savez itself buffers up to 16 MB while writing, hence 31 MB of images and a 1.8x bound)."""
    num_images, size = 10, 1024
    ramp = np.arange(size, dtype=np.int64)[:, None, None]
    expected = [np.broadcast_to((ramp * (i + 1)) % 256, (size, size, 3)).astype(np.uint8) for i in range(num_images)]
    for i, image in enumerate(expected):
        PIL.Image.fromarray(image).save(tmp_path / f"{i:06d}.png")
    array_bytes = num_images * size * size * 3
    tracemalloc.start()
    try:
        images = pack_npz(tmp_path, list(range(num_images)), tmp_path / "samples.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.8 * array_bytes, f"peak {peak / array_bytes:.2f}x the array"
    np.testing.assert_array_equal(images, np.stack(expected))
    np.testing.assert_array_equal(np.load(tmp_path / "samples.npz")["arr_0"], images)
