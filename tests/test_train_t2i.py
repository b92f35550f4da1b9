"""Text-to-image training: captioned folders, the caption embedding cache, the shared objective and training runs of
a tiny text-to-image model with a tiny real Qwen3 encoder."""

import json

import numpy as np
import pytest
import torch
from components import (
    TINY_CAPTION_COLOURS,
    TINY_T2I_TRAIN_MODEL,
    tiny_qwen3,
    tiny_qwen_tokenizer,
    tiny_t2i_pipeline,
    tiny_t2i_transformer,
    write_tiny_caption_folder,
)
from safetensors.torch import load_file

from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline
from pixelgen_diffusers.training import PixelGenLoss, TrainingConfig, train
from pixelgen_diffusers.training.captions import CaptionEmbeddingCache, load_embedding
from pixelgen_diffusers.training.data import ImageCaptionDataset
from pixelgen_diffusers.training.losses import drop_captions, sample_time


# ---------------------------------------------------------------------------------------------------- captions
@pytest.mark.parametrize("layout", ["metadata", "txt"])
def test_caption_folder_layouts_read_images_and_captions(tmp_path, layout):
    write_tiny_caption_folder(tmp_path, layout=layout, per_caption=2)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    if layout == "metadata":
        with open(tmp_path / "metadata.jsonl", "a") as file:
            file.write(json.dumps({"file_name": "broken.png", "text": "broken"}) + "\n")
    else:
        (tmp_path / "broken.txt").write_text("broken")
    dataset = ImageCaptionDataset(tmp_path, sample_size=32)
    assert len(dataset) == 4 and dataset.num_skipped == 1
    assert dataset.captions == ["a red square"] * 2 + ["a blue square"] * 2
    image, index = dataset[3]
    assert image.shape == (3, 32, 32) and index == 3
    assert image[2].mean() > image[0].mean()  # the blue one


def test_caption_folder_errors(tmp_path):
    write_tiny_caption_folder(tmp_path / "txt", layout="txt", per_caption=1)
    (tmp_path / "txt" / "0_0.txt").unlink()
    with pytest.raises(ValueError, match=r"1 of 2 images .* have no caption.*0_0\.png"):
        ImageCaptionDataset(tmp_path / "txt", 32)

    folder = write_tiny_caption_folder(tmp_path / "meta", per_caption=1)
    metadata = folder / "metadata.jsonl"
    with pytest.raises(ValueError, match=r"caption_column 'txt' is not a column .*\['text'\].*did you mean 'text'"):
        ImageCaptionDataset(folder, 32, caption_column="txt")
    metadata.write_text('{"file_name": "0_0.png", "text": "a"}\n{"file_name": "1_0.png", "text": null}\n')
    with pytest.raises(ValueError, match=r"line 2 \('1_0.png'\) has no caption"):
        ImageCaptionDataset(folder, 32)
    metadata.write_text('{"file_name": "0_0.png", "text": ""}\n{"file_name": "1_0.png", "text": " "}\n')
    with pytest.raises(ValueError, match="caption column 'text' .* is empty in every row"):
        ImageCaptionDataset(folder, 32)
    metadata.write_text('{"file_name": "missing.png", "text": "a"}\n')
    with pytest.raises(ValueError, match="lists 'missing.png', which is not a file"):
        ImageCaptionDataset(folder, 32)


# ----------------------------------------------------------------------------------------- the embedding cache
def test_caption_cache_hits_misses_and_invalidation(tmp_path):
    pipeline = tiny_t2i_pipeline()
    captions = ["a red square", "a blue square", "a red square", ""]
    cache = CaptionEmbeddingCache(tmp_path, pipeline)
    cache.encode(captions)
    assert (cache.hits, cache.misses) == (0, 3)  # each distinct caption once
    expected, _ = pipeline.encode_prompt(["a blue square"], do_classifier_free_guidance=False)
    assert torch.equal(cache.load("a blue square"), expected[0])  # the pipeline's own path, bfloat16 rounding too
    assert cache.load("a blue square").dtype == torch.bfloat16

    again = CaptionEmbeddingCache(tmp_path, pipeline)
    again.encode(captions + ["a green square"])
    assert (again.hits, again.misses) == (3, 1) and again.folder == cache.folder

    with torch.no_grad():  # another encoder (fine-tuned weights) must not reuse the old embeddings
        pipeline.text_encoder.norm.weight.add_(0.5)
    changed = CaptionEmbeddingCache(tmp_path, pipeline)
    changed.encode(captions)
    assert changed.folder != cache.folder and (changed.hits, changed.misses) == (0, 3)
    assert not torch.equal(changed.load("a blue square"), cache.load("a blue square"))

    other_settings = tiny_t2i_pipeline(transformer_overrides={"txt_max_length": 6})
    shorter = CaptionEmbeddingCache(tmp_path, other_settings)
    assert shorter.folder not in (cache.folder, changed.folder)
    shorter.encode(["a red square"])
    assert shorter.misses == 1 and shorter.load("a red square").shape == (6, 24)


# ----------------------------------------------------------------------------------------------- the objective
def test_t2i_objective_is_the_c2i_objective_with_caption_dropout():
    """Same time sampling, noising, velocities and FM loss as class-to-image (replayed from the generator); the
    condition dropout replaces captions by the empty prompt's embedding."""
    transformer = tiny_t2i_transformer()
    empty = torch.randn(1, 8, 24)
    objective = PixelGenLoss(transformer, label_dropout=0.5, empty_prompt_embeds=empty)
    seen = {}

    def record(module, args, output):
        seen["noisy"], seen["t"], seen["text"] = args
        seen["prediction"] = output[0]

    transformer.register_forward_hook(record)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    captions = torch.randn(6, 8, 24).to(torch.bfloat16)
    losses = objective(images, captions, generator=torch.Generator().manual_seed(1))

    replay = torch.Generator().manual_seed(1)
    expected_text = drop_captions(captions, empty, 0.5, replay)
    expected_t = sample_time(6, replay)
    noise = torch.randn(images.shape, generator=replay)
    dropped = [torch.equal(row, empty[0].to(torch.bfloat16)) for row in expected_text]
    assert 0 < sum(dropped) < 6
    assert torch.equal(seen["text"], expected_text.float())
    torch.testing.assert_close(seen["t"], expected_t)
    t = expected_t.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen["noisy"], t * images + (1 - t) * noise)
    one_minus_t = (1 - t).clamp_min(0.05)
    target = (images - seen["noisy"]) / one_minus_t
    predicted = (seen["prediction"] - seen["noisy"]) / one_minus_t
    torch.testing.assert_close(losses["fm"], (predicted - target).square().mean())
    with pytest.raises(ValueError, match="empty_prompt_embeds"):
        PixelGenLoss(transformer)


# ------------------------------------------------------------------------------------------------ training runs
def _config(tmp_path, output: str, **overrides) -> TrainingConfig:
    data_dir = tmp_path / "data"
    if not data_dir.exists():
        write_tiny_caption_folder(data_dir)
    values = dict(
        data_dir=str(data_dir),
        output_dir=str(tmp_path / output),
        caption_cache_dir=str(tmp_path / "cache"),
        text_encoder=tiny_qwen3(),
        tokenizer=tiny_qwen_tokenizer(),
        sample_size=32,
        model_config=TINY_T2I_TRAIN_MODEL,
        batch_size=4,
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


def test_t2i_training_learns_captions(tmp_path):
    """From scratch on the captions folder: the loss falls, and after training a caption of the data draws its colour
    while an unrelated prompt draws something else."""
    config = _config(tmp_path, "run", max_steps=120, learning_rate=2e-3, ema_decay=0.0, log_every=10)
    config.sample_every = config.checkpoint_every = 120
    checkpoint = train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], [record["loss"] for record in log]
    assert (tmp_path / "run" / "samples" / "step-0000120.png").is_file()

    pipeline = PixelGenT2IPipeline.from_pretrained(checkpoint)
    # Trained with an encoder given in memory: the checkpoint does not claim it is Qwen3-1.7B (or anything else).
    assert pipeline.text_encoder is None and pipeline.config.text_encoder_id is None
    with pytest.raises(ValueError, match="records no `text_encoder_id`"):
        pipeline("a red square", num_inference_steps=1)
    assert pipeline.scheduler.config.sampling_method == "adam_lm" and pipeline.config.guidance_scale == 4.0
    pipeline.register_modules(text_encoder=tiny_qwen3(), tokenizer=tiny_qwen_tokenizer())
    pipeline.set_progress_bar_config(disable=True)
    prompts = [*TINY_CAPTION_COLOURS, "zebra on a bicycle"]
    generator = [torch.Generator().manual_seed(0) for _ in prompts]
    images = pipeline(prompts, num_inference_steps=10, generator=generator, output_type="np").images
    red, blue, unrelated = (image.mean(axis=(0, 1)) for image in images)
    assert red[0] > red[2] + 0.3 and blue[2] > blue[0] + 0.3, (red, blue)
    # The same noise, another text: the unrelated prompt draws another image than the captions of the data (a
    # two-caption model maps it near one of its two colours, so it is far from at least the other one).
    assert not np.array_equal(images[2], images[0]) and not np.array_equal(images[2], images[1])
    assert max(np.abs(unrelated - red).max(), np.abs(unrelated - blue).max()) > 0.3, (unrelated, red, blue)


def test_t2i_resume_continues_bit_for_bit_and_reuses_the_caption_cache(tmp_path, caplog):
    straight = train(_config(tmp_path, "straight"))
    train(_config(tmp_path, "halves", max_steps=2))
    resumed = train(_config(tmp_path, "halves", resume="latest"))
    for name in ("training_state/model.safetensors", "transformer/diffusion_pytorch_model.safetensors"):
        expected, actual = load_file(straight / name), load_file(resumed / name)
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    cached = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) == 3  # two captions and the empty prompt, encoded once for the three runs
    embedding = load_embedding(cached[0])
    assert embedding.shape == (8, 24) and embedding.dtype == torch.bfloat16


def test_t2i_fine_tuning_keeps_the_pretrained_sampling_recipe_unless_overridden(tmp_path):
    base = train(_config(tmp_path, "base", max_steps=2, sampling_method="euler", guidance_scale=2.5))
    fine_tune = dict(max_steps=2, pretrained=str(base), model_config={}, num_inference_steps=None)
    kept = train(_config(tmp_path, "kept", **fine_tune))
    pipeline = PixelGenT2IPipeline.from_pretrained(kept)
    assert pipeline.scheduler.config.sampling_method == "euler"
    assert (pipeline.config.guidance_scale, pipeline.config.num_inference_steps) == (2.5, 2)
    overridden = train(_config(tmp_path, "overridden", **fine_tune, guidance_scale=5.0))
    assert PixelGenT2IPipeline.from_pretrained(overridden).config.guidance_scale == 5.0
    with pytest.raises(ValueError, match="model_type is 'c2i' but the pretrained model .* is 't2i'"):
        train(_config(tmp_path, "wrong", pretrained=str(base), model_config={}, model_type="c2i"))
    with pytest.raises(ValueError, match="a text-to-image run; labels_file belong"):
        train(_config(tmp_path, "wrong", labels_file="labels.csv"))


def test_pixelgen_train_cli_trains_text_to_image_with_a_text_encoder_folder(tmp_path):
    from pixelgen_diffusers.cli import main

    tiny_qwen3().save_pretrained(tmp_path / "qwen")
    tiny_qwen_tokenizer().save_pretrained(tmp_path / "qwen")
    write_tiny_caption_folder(tmp_path / "data", layout="txt", per_caption=1)
    arguments = ["train", "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "run")]
    arguments += ["--text-encoder", str(tmp_path / "qwen"), "--model-config", json.dumps(TINY_T2I_TRAIN_MODEL)]
    arguments += ["--sample-size", "32", "--batch-size", "2", "--max-steps", "1", "--num-workers", "0"]
    assert main(arguments) == 0
    pipeline = PixelGenT2IPipeline.from_pretrained(tmp_path / "run" / "checkpoint-1")
    assert pipeline.config.text_encoder_id == str(tmp_path / "qwen")
    image = pipeline("a red square", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    assert len(list((tmp_path / "run" / "caption_embeddings").rglob("*.safetensors"))) == 3
    missing = ["train", "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "bad")]
    assert main([*missing, "--text-encoder", str(tmp_path / "nothing-here")]) == 2


def test_t2i_training_with_perceptual_terms_repa_checkpointing_and_a_pipeline_folder_encoder(tmp_path):
    from components import tiny_dino, tiny_lpips

    tiny_t2i_pipeline().save_pretrained(tmp_path / "pipe")  # text_encoder/ and tokenizer/ subfolders
    config = _config(tmp_path, "run", max_steps=1, text_encoder=str(tmp_path / "pipe"), tokenizer=None)
    config.lpips, config.dino, config.repa_layer, config.gradient_checkpointing = tiny_lpips(), tiny_dino(), 1, True
    checkpoint = train(config)
    log = json.loads((tmp_path / "run" / "train_log.jsonl").read_text())
    assert {"fm", "repa", "lpips", "dino", "loss"} <= set(log)
    assert "projector.4.weight" in load_file(checkpoint / "training_state" / "model.safetensors")
    pipeline = PixelGenT2IPipeline.from_pretrained(checkpoint)
    assert pipeline.config.text_encoder_id == str(tmp_path / "pipe")
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline("a red square", num_inference_steps=2, output_type="np").images  # loads the encoder
    assert images.shape == (1, 32, 32, 3) and pipeline.text_encoder is not None


def test_fine_tuning_the_bundled_t2i_demo_keeps_its_shipped_encoder_reachable(tmp_path):
    """The demo ships its encoder and records no `text_encoder_id`; a fine-tune of it must still draw from a prompt
    with no extra arguments (it records the pretrained folder as where the encoder loads from)."""
    from pixelgen_diffusers.demo import t2i_model_dir

    demo = t2i_model_dir()
    assert json.loads((demo / "model_index.json").read_text())["text_encoder_id"] is None
    config = _config(
        tmp_path, "run", max_steps=1, pretrained=str(demo), model_config={}, text_encoder=None, tokenizer=None
    )
    checkpoint = train(config)
    pipeline = PixelGenT2IPipeline.from_pretrained(checkpoint)
    assert pipeline.config.text_encoder_id == str(demo.resolve())
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline("a red star on a blue background", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3) and pipeline.text_encoder is not None


def test_caption_cache_key_covers_every_input_of_the_embedding(tmp_path):
    pipeline = tiny_t2i_pipeline()
    base = CaptionEmbeddingCache(tmp_path, pipeline).key

    other_pad = tiny_t2i_pipeline()
    other_pad.tokenizer.pad_token = "!"  # another pad token: padded positions get another token id
    assert CaptionEmbeddingCache(tmp_path, other_pad).key != base
    embeds, _ = pipeline.encode_prompt(["a"], do_classifier_free_guidance=False)
    other_embeds, _ = other_pad.encode_prompt(["a"], do_classifier_free_guidance=False)
    assert not torch.equal(embeds, other_embeds)  # so reusing the cache would train on wrong embeddings

    other_dtype = tiny_t2i_pipeline()
    other_dtype.text_encoder.to(torch.bfloat16)
    assert CaptionEmbeddingCache(tmp_path, other_dtype).key != base

    implementations = set()
    for implementation in ("eager", "sdpa"):
        other_attention = tiny_t2i_pipeline()
        other_attention.text_encoder.set_attn_implementation(implementation)
        implementations.add(CaptionEmbeddingCache(tmp_path, other_attention).key)
    assert len(implementations) == 2

    assert CaptionEmbeddingCache(tmp_path, tiny_t2i_pipeline()).key == base  # the same inputs: the same key


def test_an_exported_fine_tune_of_the_bundled_t2i_demo_ships_its_encoder_and_names_no_machine_path(tmp_path, capsys):
    from test_faults import run_cli

    from pixelgen_diffusers.conversion.hub import load_pipeline
    from pixelgen_diffusers.demo import t2i_model_dir

    demo = t2i_model_dir()
    config = _config(
        tmp_path, "run", max_steps=1, pretrained=str(demo), model_config={}, text_encoder=None, tokenizer=None
    )
    checkpoint = train(config)
    assert run_cli(capsys, "export", checkpoint, tmp_path / "shared")[0] == 0
    shared = tmp_path / "shared"
    for path in shared.rglob("*"):
        if path.suffix in (".json", ".md", ".py", ".txt"):
            text = path.read_text()
            assert str(demo.resolve()) not in text and str(tmp_path) not in text, path
    model_index = json.loads((shared / "model_index.json").read_text())
    assert model_index["text_encoder_id"] is None and model_index["text_encoder"] == ["transformers", "Qwen3Model"]
    assert "The text encoder and its tokenizer are included" in (shared / "README.md").read_text()
    pipeline = load_pipeline(shared)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline("a red star on a blue background", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)

    # --text-encoder with a Hub id: recorded, not shipped.
    assert run_cli(capsys, "export", checkpoint, tmp_path / "by-id", "--text-encoder", "Qwen/Qwen3-1.7B")[0] == 0
    model_index = json.loads((tmp_path / "by-id" / "model_index.json").read_text())
    assert model_index["text_encoder_id"] == "Qwen/Qwen3-1.7B" and model_index.get("text_encoder") in (
        None,
        [None, None],
    )
