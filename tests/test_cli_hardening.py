"""Command-line checks made before any work, and one-line errors: eval-demo's model kind and --json file, labels on
a malformed id2label, sample's cache remedy and sampling_config.json, --seed range, Hub-looking values offline."""

import json

import pytest
import torch
from components import tiny_t2i_pipeline
from test_faults import assert_one_line, run_cli

from pixelgen_diffusers.demo import model_dir, t2i_model_dir


@pytest.mark.parametrize("t2i", [False, True])
def test_eval_demo_refuses_a_model_of_the_other_kind_before_printing_the_table(capsys, t2i):
    model = model_dir() if t2i else t2i_model_dir()
    code, out, err = run_cli(capsys, "eval-demo", *(["--t2i"] if t2i else []), "--model", model)
    assert_one_line(code, err, "eval-demo", f"--model {model} is a {'class' if t2i else 'text'}-to-image model")
    assert out == ""


def test_eval_demo_checks_its_json_file_up_front_never_writes_through_a_link_and_takes_threads(
    tmp_path, capsys, monkeypatch
):
    (tmp_path / "file").write_text("")
    for t2i in ([], ["--t2i"]):
        code, out, err = run_cli(capsys, "eval-demo", *t2i, "--json", tmp_path / "file" / "rows.json")
        assert_one_line(code, err, "eval-demo", "--json")
        assert out == ""  # before the table header, before any sampling
    code, _, err = run_cli(capsys, "eval-demo", "--json", tmp_path)
    assert_one_line(code, err, "eval-demo", "is a folder")

    (tmp_path / "precious.json").write_text("keep")
    (tmp_path / "rows.json").symlink_to(tmp_path / "precious.json")
    arguments = ["eval-demo", "--t2i", "--methods", "euler", "--steps", "1", "--guidance", "1"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert run_cli(capsys, *arguments, "--json", tmp_path / "rows.json")[0] == 0
        assert torch.get_num_threads() == 1  # the small demo model: one thread, as generate
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "precious.json").read_text() == "keep"
    assert not (tmp_path / "rows.json").is_symlink() and json.loads((tmp_path / "rows.json").read_text())


# ------------------------------------------------------------------------------------ convert / export folders
@pytest.fixture
def saved(tmp_path):
    from components import tiny_c2i_pipeline

    tiny_c2i_pipeline().save_pretrained(tmp_path / "saved")
    return tmp_path / "saved"


def test_export_cleans_what_a_killed_run_left_and_recovers_a_folder_left_between_the_two_renames(
    tmp_path, capsys, saved
):
    assert run_cli(capsys, "export", saved, tmp_path / "model")[0] == 0
    original = (tmp_path / "model" / "model_index.json").read_bytes()
    # Killed mid-write: a hidden temporary folder. Killed between the renames of --overwrite: the old folder lies in
    # its hidden backup folder, and the output is missing.
    (tmp_path / ".model.tmp-abc123").mkdir()
    (tmp_path / ".model.tmp-abc123" / "half.safetensors").write_bytes(b"half")
    (tmp_path / ".model.old-xyz").mkdir()
    (tmp_path / "model").rename(tmp_path / ".model.old-xyz" / "model")

    code, _, err = run_cli(capsys, "export", saved, tmp_path / "model")  # no --overwrite: the recovered folder stays
    assert_one_line(
        code, "\n".join(line for line in err.splitlines() if "interrupted" not in line), "export", "--overwrite"
    )
    assert "recovered" in err and "removed" in err
    assert (tmp_path / "model" / "model_index.json").read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "saved"]


def test_export_and_convert_refuse_an_output_inside_the_source_folder(tmp_path, capsys, saved):
    code, _, err = run_cli(capsys, "export", saved, saved / "exported")
    assert_one_line(code, err, "export", f"output folder {saved / 'exported'} is inside the source folder")
    assert not (saved / "exported").exists()


# ----------------------------------------------------------------------------------------- up-front checks
def test_an_output_folder_that_cannot_hold_files_fails_the_up_front_check(tmp_path, capsys):
    from pixelgen_diffusers.utils import check_output_folder

    with pytest.raises(ValueError, match="--out /proc/nope: its parent /proc is not writable"):
        check_output_folder("/proc/nope", "--out")
    code, _, err = run_cli(capsys, "generate", "--class", "circle", "--out", "/proc/nope")
    assert_one_line(code, err, "generate", "--out /proc/nope")
    assert list(tmp_path.iterdir()) == [] and check_output_folder(tmp_path, "--out") == tmp_path  # no probe left


@pytest.mark.parametrize("command", ["generate", "sample", "eval-demo"])
def test_a_seed_beyond_what_generators_take_fails_when_parsed(tmp_path, capsys, command):
    code, _, err = run_cli(capsys, command, "--seed", str(2**64), "--out", tmp_path)
    assert code == 2 and f"--seed: must be an integer in [0, {2**64 - 1}], got {2**64}" in err
    code, _, err = run_cli(capsys, "train", "--seed", str(2**63), "--output-dir", tmp_path / "run")
    assert code == 2 and "--seed: must be an integer in [0, " in err


def test_sample_with_faster_cache_gives_samples_remedy(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sample", "--out", tmp_path / "s", "--num-samples", "1", "--cache", "faster")
    assert_one_line(code, err, "sample", "--cache faster needs every step guided")
    assert "--guidance-interval -1 1`" not in err.replace(
        "pixelgen generate --cache faster --guidance-interval -1 1`", ""
    )


def test_a_sampling_config_that_is_not_an_object_is_one_line(tmp_path, capsys):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "000000.png").write_bytes(b"")
    (folder / "sampling_config.json").write_text("[1, 2]")
    code, _, err = run_cli(capsys, "sample", "--out", folder, "--num-samples", "1", "--steps", "1", "--no-npz")
    assert_one_line(code, err, "sample", "sampling_config.json holds a JSON list, not the settings object")


@pytest.mark.parametrize("id2label", ["[1, 2]", '{"a": "cat"}', '{"0": 5}', '"cats"'])
def test_labels_on_a_malformed_id2label_is_one_line(tmp_path, capsys, id2label):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text(
        f'{{"_class_name": "PixelGenC2IPipeline", "id2label": {id2label}}}'
    )
    code, _, err = run_cli(capsys, "labels", "cat", "--model", tmp_path / "model")
    assert_one_line(code, err, "labels", "model_index.json's id2label must map class ids to names")


@pytest.mark.parametrize(
    "arguments",
    [
        ["generate", "--class", "circle", "--lora", "someone/a-lora:0.5"],
        ["train", "--data-dir", "DATA", "--pretrained", "someone/a-model"],
        ["train", "--data-dir", "DATA", "--model-config", '{"depth": 2}', "--dino", "someone/a-dino"],
    ],
)
def test_hub_ids_that_cannot_load_offline_fail_fast_naming_the_option(tmp_path, capsys, monkeypatch, arguments):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was reached")

    monkeypatch.setattr(huggingface_hub.file_download, "get_session", no_network, raising=False)
    (tmp_path / "DATA").mkdir()
    arguments = [str(tmp_path / "DATA") if value == "DATA" else value for value in arguments]
    output = ["--out", tmp_path / "o"] if arguments[0] == "generate" else ["--output-dir", tmp_path / "o"]
    code, _, err = run_cli(capsys, *arguments, *output)
    option = next(value for value in arguments if value in ("--lora", "--pretrained", "--dino"))
    assert_one_line(code, err, arguments[0], f"{option} ")
    assert "HF_HUB_OFFLINE=1 forbids downloading" in err


def test_a_t2i_model_without_its_encoder_fails_fast_when_the_hub_cannot_be_reached(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    tiny_t2i_pipeline(with_text_encoder=False, text_encoder_id="someone/qwen-encoder").save_pretrained(tmp_path / "m")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    requests = []

    def unreachable(repo_id, **kwargs):  # what huggingface_hub raises without a network, at once
        requests.append(repo_id)
        raise huggingface_hub.errors.HfHubHTTPError("Connection error: cannot resolve huggingface.co")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    code, _, err = run_cli(capsys, "generate", "--model", tmp_path / "m", "--prompt", "a", "--out", tmp_path / "o")
    assert_one_line(
        code, err, "generate", "loading it from 'someone/qwen-encoder' failed (someone/qwen-encoder is not"
    )
    assert "in the local cache and the Hub cannot be reached" in err
    assert "pass --text-encoder FOLDER" in err and requests == ["someone/qwen-encoder"]
    assert not (tmp_path / "o").exists()
