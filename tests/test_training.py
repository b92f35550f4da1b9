"""The trainer: loss pieces against their formulas, perceptual terms with tiny random backbones, data loading,
checkpoints, bit-for-bit resume and a 2-process accelerate run."""

import json
import os
import socket
import subprocess
import sys
from unittest import mock

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from components import TINY_TRAIN_MODEL, tiny_dino, tiny_lpips, tiny_transformer, write_tiny_image_folder
from safetensors.torch import load_file, save_file

from pixelgen_diffusers.training import (
    EMA,
    ImageClassDataset,
    PixelGenLoss,
    TrainingConfig,
    center_crop_arr,
    load_dino,
    load_lpips,
    train,
)
from pixelgen_diffusers.training import trainer as trainer_module
from pixelgen_diffusers.training.data import StepBatchSampler
from pixelgen_diffusers.training.losses import drop_labels, noise_gate, sample_time, velocity


# ------------------------------------------------------------------------------------------------- loss pieces
def test_sample_time_is_logit_normal_with_upstream_defaults():
    generator = torch.Generator().manual_seed(0)
    t = sample_time(200_000, generator)
    logits = torch.log(t / (1 - t))
    assert abs(logits.mean().item() - (-0.8)) < 0.01
    assert abs(logits.std().item() - 0.8) < 0.01
    assert 0 < t.min() and t.max() < 1


def test_sample_time_applies_the_time_shift_formula():
    unshifted = sample_time(1000, torch.Generator().manual_seed(1), p_mean=0.3, p_std=1.2)
    shifted = sample_time(1000, torch.Generator().manual_seed(1), p_mean=0.3, p_std=1.2, timeshift=3.0)
    torch.testing.assert_close(shifted, unshifted / (unshifted + (1 - unshifted) * 3.0))


def test_velocity_clamps_one_minus_t_at_t_eps():
    image, noisy = torch.full((2, 3, 4, 4), 0.5), torch.zeros(2, 3, 4, 4)
    t = torch.tensor([0.5, 0.99])
    result = velocity(image, noisy, t, t_eps=0.05)
    assert torch.allclose(result[0], torch.full((3, 4, 4), 0.5 / 0.5))
    assert torch.allclose(result[1], torch.full((3, 4, 4), 0.5 / 0.05))


def test_noise_gate_keeps_samples_at_or_above_threshold():
    t = torch.tensor([0.1, 0.3, 0.29999, 0.7])
    assert noise_gate(t, 0.3).tolist() == [False, True, False, True]


def test_label_dropout_rate_and_null_class():
    labels = torch.randint(0, 10, (100_000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, null_class_id=10, probability=0.1, generator=torch.Generator().manual_seed(1))
    is_dropped = dropped != labels
    assert abs(is_dropped.float().mean().item() - 0.1) < 0.005
    assert (dropped[is_dropped] == 10).all()
    assert torch.equal(dropped[~is_dropped], labels[~is_dropped])


def test_ema_update_is_decay_times_ema_plus_one_minus_decay_times_parameter():
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.9)
    assert all(parameter.dtype == torch.float32 for parameter in ema.model.parameters())
    before = [parameter.clone() for parameter in ema.model.parameters()]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)
    for old, new, parameter in zip(before, ema.model.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * parameter.float())


def test_flow_matching_loss_matches_formula_on_the_model_inputs():
    transformer = tiny_transformer()
    objective = PixelGenLoss(transformer, label_dropout=0.5)
    seen = {}

    def record(module, args, output):
        seen["noisy"], seen["t"], seen["labels"] = args
        seen["prediction"] = output[0]

    transformer.register_forward_hook(record)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    labels = torch.arange(6)
    losses = objective(images, labels, generator=torch.Generator().manual_seed(3))

    # Replay the generator in the documented order: label dropout, then time, then noise.
    replay = torch.Generator().manual_seed(3)
    expected_labels = drop_labels(labels, 10, 0.5, replay)
    expected_t = sample_time(6, replay)
    noise = torch.randn(images.shape, generator=replay)
    t = expected_t.view(-1, 1, 1, 1)
    assert torch.equal(seen["labels"], expected_labels)
    torch.testing.assert_close(seen["t"], expected_t)
    torch.testing.assert_close(seen["noisy"], t * images + (1 - t) * noise)
    one_minus_t = (1 - t).clamp_min(0.05)
    target = (images - seen["noisy"]) / one_minus_t
    predicted = (seen["prediction"] - seen["noisy"]) / one_minus_t
    torch.testing.assert_close(losses["fm"], (predicted - target).square().mean())
    torch.testing.assert_close(losses["loss"], losses["fm"])


def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    transformer = tiny_transformer().train()
    objective = PixelGenLoss(transformer)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    images, labels = torch.rand(8, 3, 32, 32) * 2 - 1, torch.arange(8)
    before = objective(images, labels, generator=torch.Generator().manual_seed(0))["loss"]
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = objective(images, labels, generator=torch.Generator().manual_seed(0))["loss"]
    assert after < before


# ------------------------------------------------------------------------------------------- perceptual terms
def _objective_with_backbones(**kwargs):
    transformer = tiny_transformer()
    return PixelGenLoss(transformer, lpips=load_lpips(tiny_lpips()), dino=load_dino(tiny_dino()), **kwargs)


def test_perceptual_losses_average_over_gated_samples_and_give_them_alone_gradients():
    objective = _objective_with_backbones()
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    prediction = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_()
    gate = torch.tensor([True, False, True, False])
    clean_features = objective.dino((images + 1) / 2)
    losses = objective.perceptual_losses(prediction, images, clean_features, gate)
    sum(losses.values()).backward()

    assert prediction.grad[~gate].abs().sum() == 0
    assert (prediction.grad[gate].flatten(1).abs().sum(dim=1) > 0).all()
    with torch.no_grad():
        # LPIPS at upstream's scale (patch 8 -> 2x), per gated sample, averaged; weight 0.1.
        resized = [F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True) for x in (prediction, images)]
        per_sample = [objective.lpips(resized[0][i : i + 1], resized[1][i : i + 1]).item() for i in (0, 2)]
        torch.testing.assert_close(losses["lpips"].item(), 0.1 * sum(per_sample) / 2, rtol=1e-5, atol=1e-7)
        cosines = [
            F.cosine_similarity(objective.dino((prediction[i : i + 1] + 1) / 2), clean_features[i : i + 1], dim=-1)
            for i in (0, 2)
        ]
        torch.testing.assert_close(losses["dino"].item(), 0.01 * (1 - torch.cat(cosines).mean().item()))


def test_perceptual_losses_are_zero_without_gated_samples():
    objective = _objective_with_backbones()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    prediction = images.clone().add_(0.1).requires_grad_()
    losses = objective.perceptual_losses(
        prediction, images, objective.dino((images + 1) / 2), torch.zeros(2, dtype=bool)
    )
    assert all(value.item() == 0 for value in losses.values())


def test_full_objective_gates_by_sampled_time():
    objective = _objective_with_backbones()
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    seen = {}
    objective.transformer.register_forward_hook(lambda module, args, output: seen.update(t=args[1], x=output[0]))
    losses = objective(images, torch.arange(8), generator=torch.Generator().manual_seed(0))
    gate = seen["t"] >= 0.3
    assert 0 < gate.sum() < 8  # this seed gives both kinds
    with torch.no_grad():
        expected = objective.perceptual_losses(seen["x"], images, objective.dino((images + 1) / 2), gate)
    torch.testing.assert_close(losses["lpips"], expected["lpips"])
    torch.testing.assert_close(losses["dino"], expected["dino"])
    torch.testing.assert_close(losses["loss"], losses["fm"] + losses["lpips"] + losses["dino"])


@pytest.mark.parametrize("repa_layer", [1, 2])
def test_repa_aligns_projected_image_tokens_of_the_chosen_block(repa_layer):
    transformer = tiny_transformer(depth=3)  # in-context tokens join before block 1
    objective = PixelGenLoss(transformer, dino=load_dino(tiny_dino()), dino_weight=0.0, repa_layer=repa_layer)
    outputs = {}
    previous_block = transformer.transformer_blocks[repa_layer - 1]
    previous_block.register_forward_hook(lambda module, args, output: outputs.update(h=output))
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    losses = objective(images, torch.arange(3), generator=torch.Generator().manual_seed(0))

    # Block 0's output has no in-context tokens yet; block 1's has 4 in front of the 4x4 image grid.
    image_tokens = outputs["h"][:, -16:]
    assert image_tokens.shape == (3, 16, 32)
    with torch.no_grad():
        target = objective.dino((images + 1) / 2)
        assert target.shape == (3, 16, 16)  # DINOv2's grid matches the denoiser's
        expected = 1 - F.cosine_similarity(objective.projector(image_tokens), target, dim=-1).mean()
    torch.testing.assert_close(losses["repa"], expected)
    torch.testing.assert_close(losses["loss"], losses["fm"] + 0.5 * losses["repa"])
    losses["loss"].backward()
    assert objective.projector[0].weight.grad.abs().sum() > 0


def test_adaptive_perceptual_weight_follows_upstream_formula():
    objective = _objective_with_backbones(adaptive_weight_start=0).train()
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    losses = objective(images, torch.arange(8), generator=torch.Generator().manual_seed(0), step=50)
    last_layer = objective.transformer.final_layer.proj_out.weight
    fm_grad = torch.autograd.grad(losses["fm"], last_layer, retain_graph=True)[0]
    percept_grad = torch.autograd.grad(losses["lpips"] + losses["dino"], last_layer, retain_graph=True)[0]
    ratio = (fm_grad.norm() / (percept_grad.norm() + 1e-4)).clamp(0, 100)
    torch.testing.assert_close(objective.percept_weight, 0.8 * 1.0 + 0.2 * ratio)
    torch.testing.assert_close(
        losses["loss"], losses["fm"] + objective.percept_weight * (losses["lpips"] + losses["dino"])
    )


# ------------------------------------------------------------------------------------------- loading backbones
def test_missing_backbones_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="LPIPS backbone .*does-not-exist"):
        load_lpips(tmp_path / "does-not-exist")
    with pytest.raises(ValueError, match="DINOv2 backbone"):
        load_dino(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="REPA .*dino"):
        TrainingConfig(data_dir="x", output_dir="y", repa_layer=2)
    with mock.patch("huggingface_hub.snapshot_download", side_effect=OSError("offline")):
        with pytest.raises(ValueError, match="Could not fetch the DINOv2 backbone 'facebook/dinov2-base'"):
            load_dino("facebook/dinov2-base")


def test_lpips_loads_lpips_package_layout_and_torchvision_plus_vgg_pth(tmp_path):
    reference = tiny_lpips()
    state = reference.state_dict()
    slices = {3: 1, 8: 2, 15: 3, 22: 4, 29: 5}
    lpips_layout = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1)}
    for key, value in state.items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            slice_number = next(number for last, number in slices.items() if index <= last)
            lpips_layout[f"net.slice{slice_number}.{key.split('.', 1)[1]}"] = value
        else:
            lpips_layout[f"lin{key.split('.')[1]}.model.1.weight"] = value
    save_file(lpips_layout, tmp_path / "lpips_vgg.safetensors")

    split = tmp_path / "split"
    split.mkdir()
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, split / "vgg16.pth")
    torch.save({k: v for k, v in lpips_layout.items() if k.startswith("lin")}, split / "vgg.pth")

    image, target = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    expected = reference(image, target)
    for source in (tmp_path / "lpips_vgg.safetensors", split):
        loaded = load_lpips(source)
        torch.testing.assert_close(loaded(image, target), expected)
        assert not any(parameter.requires_grad for parameter in loaded.parameters())

    os.remove(split / "vgg.pth")
    with pytest.raises(ValueError, match="linear layers"):
        load_lpips(split)


def test_dino_loads_from_a_folder_and_from_a_hub_id(tmp_path):
    model = tiny_dino()
    model.save_pretrained(tmp_path / "dino")
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(pixel_values=images).last_hidden_state
        torch.testing.assert_close(load_dino(tmp_path / "dino")(pixel_values=images).last_hidden_state, expected)
        with mock.patch("huggingface_hub.snapshot_download", return_value=str(tmp_path / "dino")) as download:
            loaded = load_dino("someone/tiny-dinov2")
        download.assert_called_once()
        torch.testing.assert_close(loaded(pixel_values=images).last_hidden_state, expected)


# ------------------------------------------------------------------------------------------------------- data
def test_center_crop_arr_follows_adm_steps():
    image = PIL.Image.fromarray(torch.randint(0, 256, (70, 130, 3), dtype=torch.uint8).numpy())
    result = center_crop_arr(image, 32)
    # 70 >= 64: one box halving to 65x35; then bicubic so the short side is 32: round(65 * 32 / 35) = 59; crop.
    halved = image.resize((65, 35), resample=PIL.Image.BOX)
    resized = halved.resize((59, 32), resample=PIL.Image.BICUBIC)
    expected = resized.crop((13, 0, 45, 32))
    assert result.size == (32, 32)
    assert (np.asarray(result) == np.asarray(expected)).all()


def test_image_folder_dataset_reads_classes_and_skips_unreadable_files(tmp_path):
    write_tiny_image_folder(tmp_path, num_classes=3, per_class=2)
    (tmp_path / "class_1" / "broken.png").write_bytes(b"not an image")
    dataset = ImageClassDataset(tmp_path, sample_size=32)
    assert dataset.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}
    assert len(dataset) == 6 and dataset.num_skipped == 1
    image, label = dataset[2]
    assert image.shape == (3, 32, 32) and label == 1
    assert -1 <= image.min() and image.max() <= 1


def test_dataset_errors_for_an_empty_folder_and_accepts_a_single_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images"):
        ImageClassDataset(tmp_path / "empty", sample_size=32)
    write_tiny_image_folder(tmp_path / "one", num_classes=1)
    assert ImageClassDataset(tmp_path / "one", sample_size=32).id2label == {0: "class_0"}  # a one-class set


def test_labels_file_layouts(tmp_path):
    write_tiny_image_folder(tmp_path, num_classes=2, per_class=2)
    (tmp_path / "labels.csv").write_text("class_0/0.png,dog\nclass_0/1.png,cat\nclass_1/0.png,dog\n")
    dataset = ImageClassDataset(tmp_path, 32, labels_file=tmp_path / "labels.csv")
    assert dataset.id2label == {0: "cat", 1: "dog"}
    assert [label for _, label in dataset.samples] == [1, 0, 1]
    (tmp_path / "labels.json").write_text(json.dumps({"class_1/1.png": 3, "class_0/0.png": 0}))
    dataset = ImageClassDataset(tmp_path, 32, labels_file=tmp_path / "labels.json")
    assert len(dataset.id2label) == 4 and [label for _, label in dataset.samples] == [3, 0]


def test_step_batch_sampler_order_depends_only_on_the_step():
    full = list(StepBatchSampler(10, batch_size=2, num_steps=7, seed=4))
    tail = list(StepBatchSampler(10, batch_size=2, num_steps=7, start_step=3, seed=4))
    assert tail == full[3:]
    assert sorted(sum(full[:5], [])) == list(range(10))  # one epoch = one permutation
    ranks = [list(StepBatchSampler(10, 2, 5, seed=4, rank=rank, world_size=2)) for rank in (0, 1)]
    for step in range(2):
        assert not set(ranks[0][step]) & set(ranks[1][step])


# ---------------------------------------------------------------------------------------- training runs
def _config(tmp_path, output: str, **overrides) -> TrainingConfig:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        write_tiny_image_folder(data_dir, num_classes=2, per_class=4, size=36)
    values = dict(
        data_dir=str(data_dir),
        output_dir=str(tmp_path / output),
        sample_size=32,
        model_config={**TINY_TRAIN_MODEL, "dropout": 0.2},
        batch_size=2,
        max_steps=4,
        learning_rate=1e-3,
        ema_decay=0.5,
        num_workers=0,
        log_every=1,
        sample_every=2,
        checkpoint_every=2,
        num_inference_steps=2,
    )
    return TrainingConfig(**{**values, **overrides})


def test_training_writes_checkpoints_samples_and_logs(tmp_path):
    checkpoint = train(_config(tmp_path, "run", max_steps=2))
    assert checkpoint == tmp_path / "run" / "checkpoint-2"
    assert (tmp_path / "run" / "samples" / "step-0000002.png").is_file()
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2] and all(record["loss"] > 0 for record in log)

    from pixelgen_diffusers import PixelGenC2IPipeline

    pipeline = PixelGenC2IPipeline.from_pretrained(checkpoint)
    assert pipeline.id2label == {0: "class_0", 1: "class_1"} and pipeline.config.num_inference_steps == 2
    ema_weights = load_file(checkpoint / "transformer" / "diffusion_pytorch_model.safetensors")
    online_weights = load_file(checkpoint / "training_state" / "model.safetensors")
    changed = ema_weights["final_layer.proj_out.weight"] != online_weights["transformer.final_layer.proj_out.weight"]
    assert changed.any()  # the pipeline holds the EMA, not the online weights


def test_training_with_perceptual_terms_and_repa_checkpoints_the_projector_not_the_backbones(tmp_path):
    config = _config(tmp_path, "run", max_steps=1, lpips=tiny_lpips(), dino=tiny_dino(), repa_layer=2)
    checkpoint = train(config)
    log = json.loads((tmp_path / "run" / "train_log.jsonl").read_text())
    assert {"fm", "repa", "lpips", "dino", "loss"} <= set(log)
    saved = load_file(checkpoint / "training_state" / "model.safetensors")
    assert "projector.4.weight" in saved and saved["projector.4.weight"].shape == (16, 32)
    assert not any(name.startswith(("lpips.", "dino.")) for name in saved)
    state = json.loads((checkpoint / "training_state" / "state.json").read_text())
    assert state["config"]["lpips"] == "<LPIPS module>" and state["config"]["repa_layer"] == 2


def test_resume_continues_bit_for_bit(tmp_path):
    straight = train(_config(tmp_path, "straight"))
    train(_config(tmp_path, "halves", max_steps=2))
    resumed = train(_config(tmp_path, "halves", resume="latest"))
    for name in ("training_state/model.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        expected, actual = load_file(straight / name), load_file(resumed / name)
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name


def test_a_failed_save_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    train(_config(tmp_path, "run", max_steps=2))
    real_save_file = trainer_module.save_file

    def save_then_die(tensors, path):
        real_save_file(tensors, path)
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(trainer_module, "save_file", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, "run", resume="latest"))
    assert trainer_module.list_checkpoints(tmp_path / "run") == [tmp_path / "run" / "checkpoint-2"]
    assert not [path.name for path in (tmp_path / "run").iterdir() if "checkpoint-4" in path.name]  # cleaned up
    monkeypatch.undo()
    assert train(_config(tmp_path, "run", resume="latest")) == tmp_path / "run" / "checkpoint-4"


def test_trainer_validates_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision"):
        _config(tmp_path, "run", mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        _config(tmp_path, "run", batch_size=0)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(_config(tmp_path, "run", batch_size=16))
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        train(_config(tmp_path, "run", resume=str(tmp_path)))


def test_two_process_accelerate_run_completes(tmp_path):
    config = _config(tmp_path, "ddp", max_steps=2, sample_every=100)
    with socket.socket() as free:  # a free port, so that concurrent runs do not collide
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    # --multi_gpu is accelerate's DDP launcher (torchrun); ACCELERATE_USE_CPU=1 makes the processes join over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no"]
    command += ["--dynamo_backend", "no", "-m", "pixelgen_diffusers.cli", "train"]
    command += ["--data-dir", config.data_dir, "--output-dir", config.output_dir, "--sample-size", "32"]
    command += ["--model-config", json.dumps(TINY_TRAIN_MODEL), "--batch-size", "2", "--max-steps", "2"]
    command += ["--num-workers", "0", "--checkpoint-every", "2", "--num-inference-steps", "2"]
    # With every PixelGen term on: frozen backbones and the REPA projector inside the DDP-wrapped module.
    save_file(tiny_lpips().state_dict(), tmp_path / "lpips.safetensors")
    tiny_dino().save_pretrained(tmp_path / "dino")
    command += ["--lpips", str(tmp_path / "lpips.safetensors"), "--dino", str(tmp_path / "dino"), "--repa-layer", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    state_dir = tmp_path / "ddp" / "checkpoint-2" / "training_state"
    assert json.loads((state_dir / "state.json").read_text())["num_processes"] == 2
    assert (state_dir / "rng_state_0.pt").is_file() and (state_dir / "rng_state_1.pt").is_file()
    assert "projector.0.weight" in load_file(state_dir / "model.safetensors")
    log = json.loads((tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()[-1])
    assert {"fm", "repa", "lpips", "dino"} <= set(log)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_with_active_dropout_matches_an_uninterrupted_run(tmp_path, num_workers):
    # depth 4: blocks 1 and 2 have dropout (JiT's middle half), so every step draws from the global random stream.
    model_config = {**TINY_TRAIN_MODEL, "depth": 4, "dropout": 0.2, "attention_dropout": 0.2}
    options = dict(model_config=model_config, num_workers=num_workers, sample_every=100)
    straight = train(_config(tmp_path, "straight", **options))
    train(_config(tmp_path, "halves", max_steps=2, **options))
    resumed = train(_config(tmp_path, "halves", resume="latest", **options))
    expected = load_file(straight / "training_state/model.safetensors")
    actual = load_file(resumed / "training_state/model.safetensors")
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_a_model_config_depth_without_in_context_start_takes_the_presets_ratio(tmp_path):
    model_config = {key: value for key, value in TINY_TRAIN_MODEL.items() if key != "in_context_start"}
    checkpoint = train(_config(tmp_path, "run", model_config={**model_config, "depth": 5}, max_steps=1))
    config = json.loads((checkpoint / "transformer" / "config.json").read_text())
    assert config["depth"] == 5 and config["in_context_start"] == 5 // 3
    for preset, arguments in trainer_module.PIXELGEN_PRESETS.items():  # the ratio the presets use
        assert abs(arguments["in_context_start"] - arguments["depth"] // 3) <= 1, preset
