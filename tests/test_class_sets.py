"""Fine-tuning a class-to-image model onto a new class set: another class count (null class kept last, names from
the data, rows of same-named pretrained classes reused) or none at all (`unconditional`)."""

import numpy as np
import PIL.Image
import pytest
import torch
from components import tiny_c2i_pipeline, write_tiny_image_folder

from pixelgen_diffusers import PixelGenC2IPipeline
from pixelgen_diffusers.training import TrainingConfig, train
from pixelgen_diffusers.training.trainer import build_transformer


def _config(tmp_path, output: str, data: str, **overrides) -> TrainingConfig:
    pretrained = tmp_path / "pretrained"
    if not pretrained.exists():
        tiny_c2i_pipeline(guidance_scale=2.0).save_pretrained(pretrained)  # 10 classes, class 3 "golden retriever"
    values = dict(
        data_dir=str(tmp_path / data), output_dir=str(tmp_path / output), pretrained=str(pretrained), batch_size=2,
        max_steps=2, num_workers=0, log_every=1, sample_every=2, checkpoint_every=2, num_inference_steps=2,
    )  # fmt: skip
    return TrainingConfig(**{**values, **overrides})


def test_a_new_class_count_keeps_the_null_class_last_and_reuses_same_named_classes(tmp_path):
    write_tiny_image_folder(tmp_path / "three", num_classes=3, per_class=2, size=32)
    (tmp_path / "three" / "class_1").rename(tmp_path / "three" / "Retriever")  # a synonym of pretrained class 3
    config = _config(tmp_path, "run", "three")
    pretrained = PixelGenC2IPipeline.from_pretrained(config.pretrained).transformer.class_embedder.weight
    id2label = {0: "Retriever", 1: "class_0", 2: "class_2"}
    table = build_transformer(config, "c2i", id2label).class_embedder.weight
    assert table.shape == (4, 32)
    assert torch.equal(table[0], pretrained[3]) and torch.equal(table[3], pretrained[10])  # reused row; null last
    assert not any(torch.equal(table[row], pretrained[other]) for row in (1, 2) for other in range(11))

    checkpoint = train(config)
    pipeline = PixelGenC2IPipeline.from_pretrained(checkpoint)
    assert pipeline.transformer.config.num_classes == 3 and pipeline.id2label == id2label
    assert pipeline.config.guidance_scale == 2.0  # the pretrained recipe is kept
    images = pipeline(["Retriever", 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)
    with pytest.raises(ValueError, match="a LoRA keeps the pretrained classes"):
        train(_config(tmp_path, "lora", "three", lora_rank=2))


def test_unconditional_fine_tune_saves_a_pipeline_that_samples_without_labels(tmp_path):
    from pixelgen_diffusers.cli import main

    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):  # no class folders: any layout works unconditionally
        PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(flat / f"{index}.png")
    checkpoint = train(_config(tmp_path, "run", "flat", unconditional=True))
    pipeline = PixelGenC2IPipeline.from_pretrained(checkpoint)
    assert pipeline.transformer.config.num_classes == 0 and pipeline.id2label == {}
    assert pipeline.transformer.class_embedder.weight.shape == (1, 32)
    assert pipeline.config.guidance_scale == 1.0
    images = pipeline(num_images_per_prompt=3, num_inference_steps=2, output_type="np").images
    assert images.shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="This model is unconditional"):
        pipeline(0)
    assert (tmp_path / "run" / "samples" / "step-0000002.png").is_file()

    arguments = ["generate", "--model", str(checkpoint), "--num-images", "2", "--steps", "2", "--out"]
    assert main([*arguments, str(tmp_path / "out")]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "unconditional-seed0.png",
        "unconditional-seed1.png",
    ]
    assert main([*arguments, str(tmp_path / "bad"), "--class", "0"]) == 2
    # `sample` draws an unconditional set too (it took `i % num_classes` and divided by zero)
    sample = ["sample", "--model", str(checkpoint), "--num-samples", "3", "--steps", "2", "--out"]
    assert main([*sample, str(tmp_path / "set")]) == 0
    packed = np.load(tmp_path / "set" / "samples.npz")
    assert packed["arr_0"].shape == (3, 32, 32, 3) and packed["arr_1"].tolist() == [-1, -1, -1]
    single = pipeline(num_inference_steps=2, generator=torch.Generator().manual_seed(2)).images[0]
    np.testing.assert_array_equal(packed["arr_0"][2], np.asarray(single))
    with pytest.raises(ValueError, match="class_labels is required"):
        tiny_c2i_pipeline()()
