"""The bundled text-to-image demo: captioned shapes, the tokenizer and tiny Qwen3 encoder, the shipped model and
its attribute classifier, the GenEval-style evaluation, and the CLI defaults."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from components import run_python
from transformers import Qwen2Tokenizer, Qwen3Model
from transformers import __version__ as transformers_version

import pixelgen_diffusers
from pixelgen_diffusers.cli import main as cli_main
from pixelgen_diffusers.conversion.export import export_pipeline
from pixelgen_diffusers.demo import CLASS_NAMES, t2i_model_dir
from pixelgen_diffusers.demo.attribute_classifier import attribute_accuracy, load_attribute_classifier
from pixelgen_diffusers.demo.captions import (
    COLOR_NAMES,
    T2I_EVAL_SEED,
    all_triples,
    caption,
    captioned_shape,
    held_out_triples,
    is_held_out,
    make_captioned_shapes,
    training_triples,
    write_captioned_dataset,
)
from pixelgen_diffusers.demo.text_encoder import build_text_encoder, build_tokenizer, grammar_corpus
from pixelgen_diffusers.evaluation.demo_t2i import (
    TASKS,
    choose_t2i_default,
    evaluate_t2i,
    geneval_prompts,
    real_images,
    score,
)
from pixelgen_diffusers.models.transformer_jit_t2i import PixelGenT2ITransformer2DModel
from pixelgen_diffusers.pipelines.pipeline_pixelgen_t2i import PixelGenT2IPipeline


@pytest.fixture(scope="module")
def t2i_demo():
    pipeline = PixelGenT2IPipeline.from_pretrained(t2i_model_dir())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def attribute_classifier():
    return load_attribute_classifier()


# ------------------------------------------------------------------------------------------------------ the data
def test_captioned_shapes_are_deterministic_per_seed_and_differ_across_seeds():
    images, captions, labels = make_captioned_shapes(12, seed=5)
    again, captions_again, labels_again = make_captioned_shapes(12, seed=5)
    other, other_captions, _ = make_captioned_shapes(12, seed=6)
    assert images.shape == (12, 3, 32, 32) and labels.shape == (12, 3)
    assert torch.equal(images, again) and captions == captions_again and torch.equal(labels, labels_again)
    assert not torch.equal(images, other) and captions != other_captions
    assert -1 <= images.min() and images.max() <= 1


def test_captions_follow_the_grammar_and_name_what_is_drawn():
    assert caption("star", "red", "blue") == "a red star on a blue background"
    assert caption("arrow", "orange", "white") == "an orange arrow on a white background"
    assert caption("arrow") == "an arrow" and caption("ring", background="orange") == "a ring on an orange background"
    grammar = set(grammar_corpus())
    for index in range(200):
        _, text, (shape, color, background) = captioned_shape(index, seed=0)
        assert text in grammar
        words = text.replace(",", "").split()
        assert CLASS_NAMES[shape] in words and color != background
        named_colors = [word for word in words if word in COLOR_NAMES]
        # Every colour named is the one drawn in that role: the shape's before the shape's name ("a red star"),
        # the background's before "background".
        for position, word in enumerate(words):
            if word in COLOR_NAMES:
                role = words[position + 1]
                assert word == COLOR_NAMES[background if role == "background" else color]
        assert len(named_colors) <= 2


def test_held_out_combinations_never_appear_in_training_but_each_of_their_pairs_does():
    assert len(all_triples()) == 560 and len(held_out_triples()) == 80
    training = set(training_triples())
    for a, b in ((0, 1), (0, 2), (1, 2)):
        training_pairs = {(triple[a], triple[b]) for triple in training}
        assert {(triple[a], triple[b]) for triple in held_out_triples()} <= training_pairs
    drawn = [captioned_shape(index, seed=0)[2] for index in range(100)]
    assert not any(is_held_out(*triple) for triple in drawn)
    assert all(is_held_out(*captioned_shape(index, seed=0, held_out=True)[2]) for index in range(20))


def test_captioned_dataset_is_an_imagefolder_with_metadata_jsonl(tmp_path):
    write_captioned_dataset(tmp_path, 4, seed=5)
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == make_captioned_shapes(4, seed=5)[1]
    first = np.asarray(PIL.Image.open(tmp_path / rows[0]["file_name"]))
    assert np.array_equal(first, np.asarray(captioned_shape(0, seed=5)[0]))  # PNG is lossless
    assert not list(tmp_path.glob(".metadata*"))


# ------------------------------------------------------------------------------------------- the shipped model
def test_tokenizer_makes_every_grammar_word_one_token_and_the_shipped_one_is_the_grammar_s(t2i_demo):
    tokenizer = build_tokenizer()
    for text in ("a red star on a blue background", "orange crescent, black background", "an arrow"):
        assert len(tokenizer.tokenize(text)) == len(text.replace(",", " ,").split())
    assert tokenizer.pad_token == "<|endoftext|>"
    shipped = t2i_demo.tokenizer
    assert isinstance(shipped, Qwen2Tokenizer)
    corpus = grammar_corpus()
    assert shipped(corpus).input_ids == tokenizer(corpus).input_ids
    # Text outside the grammar still tokenizes (byte fallback), as with Qwen's own vocabulary.
    assert len(shipped.tokenize("a pink unicorn")) > 3


def test_shipped_text_encoder_is_a_tiny_qwen3_frozen_at_its_seeded_random_init(t2i_demo):
    encoder = t2i_demo.text_encoder
    assert type(encoder) is Qwen3Model
    reference = build_text_encoder(len(t2i_demo.tokenizer))
    assert encoder.config.hidden_size == reference.config.hidden_size
    for (name, parameter), (_, expected) in zip(encoder.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(parameter, expected), name


def test_t2i_demo_is_small_and_configured(t2i_demo):
    weights = list(t2i_model_dir().rglob("*.safetensors"))
    assert weights and sum(path.stat().st_size for path in weights) < 10 * 2**20
    assert type(t2i_demo.transformer) is PixelGenT2ITransformer2DModel
    config = t2i_demo.transformer.config
    assert config.sample_size == 32 and config.txt_embed_dim == t2i_demo.text_encoder.config.hidden_size
    index = json.loads((t2i_model_dir() / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "PixelGenT2IPipeline"]
    assert index["text_encoder"] == ["transformers", "Qwen3Model"]


def test_t2i_demo_records_no_text_encoder_it_does_not_ship_with(t2i_demo, tmp_path, capsys):
    """Its encoder is the tiny one in `text_encoder/`, published nowhere else: the folder must not send a pipeline
    without it to Qwen3-1.7B (whose 2048-wide features would not fit a 32-wide model), but say what to pass."""
    index = json.loads((t2i_model_dir() / "model_index.json").read_text())
    assert "text_encoder_id" in index and index["text_encoder_id"] is None
    assert t2i_demo.config.text_encoder_id is None and t2i_demo.text_encoder is not None
    bare = PixelGenT2IPipeline.from_pretrained(t2i_model_dir(), text_encoder=None, tokenizer=None)
    with pytest.raises(ValueError, match="records no `text_encoder_id`.*Pass `text_encoder=` and `tokenizer=`"):
        bare("a red star on a blue background", num_inference_steps=1)
    bare.register_modules(text_encoder=t2i_demo.text_encoder, tokenizer=t2i_demo.tokenizer)
    assert bare("a red star", num_inference_steps=1, output_type="pt").images.shape == (1, 3, 32, 32)

    # The same folder without its encoder, from the CLI: one line naming --text-encoder, before any output.
    folder = tmp_path / "no-encoder"
    shutil.copytree(t2i_model_dir(), folder, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    index.update(text_encoder=[None, None], tokenizer=[None, None])
    (folder / "model_index.json").write_text(json.dumps(index))
    out = tmp_path / "out"
    assert cli_main(["generate", "--model", str(folder), "--prompt", "a red star", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "text_encoder_id is null); pass --text-encoder FOLDER" in error and not out.exists()
    args = ["generate", "--model", str(folder), "--text-encoder", str(t2i_model_dir()), "--prompt", "a red star"]
    assert cli_main([*args, "--steps", "1", "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 1


def test_exporting_the_used_t2i_demo_again_writes_the_same_configs(t2i_demo, tmp_path):
    """Exports are deterministic: no path of this machine, no settings that a tokenizer call leaves behind. The library
    versions that diffusers and transformers stamp into configs are what may differ (the installed ones)."""
    t2i_demo("a red star", num_inference_steps=1)
    again = export_pipeline(t2i_demo, tmp_path / "again")
    version_stamps = {"_diffusers_version", "transformers_version"}

    def settings(folder, name):
        config = json.loads((folder / name).read_text())
        return {key: value for key, value in config.items() if key not in version_stamps}

    configs = [
        "transformer/config.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/tokenizer.json",
    ]
    changed = [name for name in configs if settings(again, name) != settings(t2i_model_dir(), name)]
    assert not changed, changed
    assert json.loads((again / "text_encoder/config.json").read_text())["transformers_version"] == transformers_version


def test_t2i_demo_folder_ships_the_installed_code():
    package_dir = Path(pixelgen_diffusers.__file__).parent
    shipped = {
        "pipeline.py": "pipelines/pipeline_pixelgen_t2i.py",
        "transformer/transformer_jit_t2i.py": "models/transformer_jit_t2i.py",
        "scheduler/scheduling_pixelgen.py": "schedulers/scheduling_pixelgen.py",
        # the shared modules the pipeline and the transformer import relatively, shipped beside them
        "pipeline_utils_pixelgen.py": "pipelines/pipeline_utils_pixelgen.py",
        "transformer/jit_layers.py": "models/jit_layers.py",
    }
    assert sorted(path.relative_to(t2i_model_dir()).as_posix() for path in t2i_model_dir().rglob("*.py")) == sorted(
        shipped
    )
    stale = [
        name
        for name, module in shipped.items()
        if (t2i_model_dir() / name).read_bytes() != (package_dir / module).read_bytes()
    ]
    assert not stale, f"{stale} are stale: run `python scripts/make_demo_t2i_model.py --refresh-code`."


PLAIN_DIFFUSERS_T2I_DEMO = """
import sys, torch
from diffusers import DiffusionPipeline
folder, output = sys.argv[1], sys.argv[2]
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder + "/pipeline.py", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
images = pipe(["a red star on a blue background", "a yellow heart"], generator=generators, output_type="pt").images
torch.save({"images": images, "transformer": type(pipe.transformer).__module__,
            "encoder": type(pipe.text_encoder).__name__}, output)
"""


def test_t2i_demo_loads_in_plain_diffusers_without_the_package(t2i_demo, tmp_path):
    run_python(PLAIN_DIFFUSERS_T2I_DEMO, t2i_model_dir(), tmp_path / "out.pt", cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["transformer"] == "diffusers_modules.local.transformer_jit_t2i"
    assert result["encoder"] == "Qwen3Model"
    generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
    expected = t2i_demo(["a red star on a blue background", "a yellow heart"], generator=generators, output_type="pt")
    torch.testing.assert_close(result["images"], expected.images, rtol=0, atol=1e-5)


def test_t2i_demo_draws_held_out_combinations_the_classifier_recognises(t2i_demo, attribute_classifier):
    # Half of the 80 held-out combinations at the shipped default settings. Chance: shape 0.1, colours 0.125.
    jobs = [job for job in geneval_prompts() if job["task"] == "color attribution"][::2]
    generators = [torch.Generator().manual_seed(index) for index in range(len(jobs))]
    images = t2i_demo([job["prompt"] for job in jobs], generator=generators, output_type="pt").images * 2 - 1
    scores = score(attribute_classifier, images, jobs)
    # The shipped model (13,000 steps) gets 0.95 attribution and shape, 1.0 for both colours, on these 40 prompts.
    assert scores["background accuracy"] >= 0.95 and scores["color accuracy"] >= 0.9, scores
    assert scores["shape accuracy"] >= 0.8 and scores["color attribution"] >= 0.8, scores


# ------------------------------------------------------------------------------------- classifier and evaluation
def test_attribute_classifier_scores_real_held_out_images_above_95_percent(attribute_classifier):
    images, _, labels = make_captioned_shapes(300, T2I_EVAL_SEED, held_out=True)
    accuracy = attribute_accuracy(attribute_classifier, images, labels)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_geneval_prompts_ask_for_held_out_combinations_and_real_images_score_high(attribute_classifier):
    jobs = geneval_prompts()
    assert {job["task"] for job in jobs} == set(TASKS)
    attribution = [job for job in jobs if job["task"] == "color attribution"]
    assert {job["attributes"] for job in attribution} == set(held_out_triples())
    scores = score(attribute_classifier, real_images(jobs), jobs)
    assert scores["overall"] == pytest.approx(sum(scores[task] for task in TASKS) / len(TASKS))
    assert scores["overall"] >= 0.95
    # A wrong request is scored as wrong: ask every image for another shape.
    wrong = [job | {"attributes": ((job["attributes"][0] + 1) % 10, *job["attributes"][1:])} for job in jobs]
    assert score(attribute_classifier, real_images(jobs), wrong)["overall"] <= 0.1


def test_choose_t2i_default_takes_fewest_model_evaluations_within_one_point_of_the_best():
    rows = [
        {"method": "real images", "steps": 0, "overall": 1.0},
        {"method": "euler", "steps": 25, "overall": 0.90},
        {"method": "heun", "steps": 5, "overall": 0.895},  # 9 evaluations
        {"method": "euler", "steps": 10, "overall": 0.892},
        {"method": "adam_lm", "steps": 5, "overall": 0.85},
    ]
    assert choose_t2i_default(rows) == rows[2]


def test_evaluate_t2i_scores_real_and_generated_rows(t2i_demo, attribute_classifier):
    rows = evaluate_t2i(t2i_demo, [("euler", 2, 1.0)], classifier=attribute_classifier)
    assert [row["method"] for row in rows] == ["real images", "euler"]
    assert rows[0]["overall"] >= 0.95
    assert all(0 <= rows[1][task] <= 1 for task in (*TASKS, "overall"))


def test_eval_demo_t2i_command_prints_a_table_and_writes_json(tmp_path, capsys):
    output = tmp_path / "rows.json"
    arguments = ["eval-demo", "--t2i", "--methods", "euler", "--steps", "2", "--guidance", "1"]
    assert cli_main([*arguments, "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| color attribution | overall |" in printed and "| euler | 2 | 1 |" in printed
    assert [row["method"] for row in json.loads(output.read_text())] == ["real images", "euler"]
    assert cli_main(["eval-demo", "--t2i", "--num-samples", "5"]) == 2
    assert "--images-per-prompt" in capsys.readouterr().err
    assert cli_main(["eval-demo", "--t2i", "--caches", "faster_cache"]) == 2
    assert "not --t2i" in capsys.readouterr().err


def test_pixelgen_generate_prompt_uses_the_t2i_demo_by_default(tmp_path, capsys, monkeypatch):
    prompts = ["--prompt", "a red star on a blue background", "--prompt", "a heart"]
    assert cli_main(["generate", *prompts, "--num-images", "2", "--out", str(tmp_path)]) == 0
    written = sorted(path.name for path in tmp_path.glob("*.png"))
    assert written == [
        "00-a_red_star_on_a_blue_background-seed0.png",
        "00-a_red_star_on_a_blue_background-seed1.png",
        "01-a_heart-seed0.png",
        "01-a_heart-seed1.png",
    ]
    assert PIL.Image.open(tmp_path / written[0]).size == (32, 32)

    monkeypatch.setitem(sys.modules, "pixelgen_diffusers.demo", None)  # as if the demos were not installed
    assert cli_main(["generate", "--prompt", "a heart", "--out", str(tmp_path / "none")]) == 2
    assert "bundled demo model is not installed (the text-to-image one)" in capsys.readouterr().err
