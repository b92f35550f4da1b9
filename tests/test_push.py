"""`pixelgen push` / `push_to_hub`: checks before anything is uploaded, then one `upload_folder` commit.

`huggingface_hub.HfApi`'s network methods are replaced by recorders; nothing reaches the network."""

import hashlib
import json
import re
from pathlib import Path

import huggingface_hub
import pytest
import torch
from components import tiny_c2i_pipeline, tiny_t2i_pipeline
from huggingface_hub import ModelCard

from pixelgen_diffusers import export_pipeline, push_to_hub
from pixelgen_diffusers.cli import main
from pixelgen_diffusers.conversion.model_folder import ModelFolderError


class RecordingHub:
    """Stands in for the Hub: records each HfApi call and, for upload_folder, every file staged for upload."""

    def __init__(self, monkeypatch, root_readme_exists=False, token="hf_test"):
        self.calls, self.uploaded = [], {}
        self.root_readme_exists = root_readme_exists
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
        for name in ("create_repo", "upload_folder", "file_exists"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, getattr(self, name))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def file_exists(self, repo_id, filename, **kwargs):
        self.calls.append(("file_exists", repo_id, filename))
        return self.root_readme_exists

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        for path in sorted(Path(folder_path).rglob("*")):
            if path.is_file():
                self.uploaded[path.relative_to(folder_path).as_posix()] = path.read_bytes()
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/0",
            commit_message="",
            commit_description="",
            oid="0" * 40,
        )


def digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def exported(tmp_path):
    return export_pipeline(tiny_c2i_pipeline(), tmp_path / "tiny-c2i")


def test_push_uploads_every_file_of_the_folder_once_with_the_hub_metadata_on_the_card(exported, tmp_path, monkeypatch):
    hub = RecordingHub(monkeypatch)
    rows = [{"method": "heun", "steps": 10, "accuracy": 0.875}]
    (tmp_path / "scores.json").write_text(json.dumps(rows))
    before = digests(exported)
    push_to_hub(
        exported,
        "me/tiny",
        license="mit",
        base_model="BiliSakura/PixelGen-diffusers",
        eval_json=tmp_path / "scores.json",
    )

    assert [call[0] for call in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1] == "me/tiny" and hub.calls[0][2]["exist_ok"] is True and not hub.calls[0][2]["private"]
    assert set(hub.uploaded) == set(before)  # every file, nothing else; only the card changes
    for name, digest in before.items():
        if name != "README.md":
            assert hashlib.sha256(hub.uploaded[name]).hexdigest() == digest, name
    card = ModelCard(hub.uploaded["README.md"].decode())
    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "mit"
    assert card.data.base_model == "BiliSakura/PixelGen-diffusers"
    assert {"pixelgen", "pixel-space", "flow-matching"} <= set(card.data.tags)
    assert "| method | steps | accuracy |" in card.text and "| heun | 10 | 0.875 |" in card.text
    assert digests(exported) == before  # the local folder is left as it was


def test_push_to_a_subfolder_writes_the_root_card_only_when_the_repo_has_none(exported, tmp_path, monkeypatch):
    grid = tmp_path / "grid.png"
    tiny_c2i_pipeline()(class_labels=[1], num_inference_steps=2).images[0].save(grid)
    for exists in (False, True):
        hub = RecordingHub(monkeypatch, root_readme_exists=exists)
        main(
            [
                "push",
                str(exported),
                "me/models",
                "--subfolder",
                "tiny",
                "--license",
                "mit",
                "--private",
                "--sample-grid",
                str(grid),
                "--message",
                "add tiny",
            ]
        )
        assert hub.calls[0][2]["private"] is True and hub.calls[-1][2]["commit_message"] == "add tiny"
        assert all(name.startswith("tiny/") for name in hub.uploaded if name != "README.md")
        assert hub.uploaded["tiny/samples.png"] == grid.read_bytes()
        assert "](samples.png)" in hub.uploaded["tiny/README.md"].decode()
        assert ("README.md" in hub.uploaded) is (not exists)


def test_text_to_image_folders_are_tagged_text_to_image(tmp_path, monkeypatch):
    folder = export_pipeline(tiny_t2i_pipeline(), tmp_path / "tiny-t2i")
    hub = RecordingHub(monkeypatch)
    push_to_hub(folder, "me/tiny-t2i", license="mit")
    assert ModelCard(hub.uploaded["README.md"].decode()).data.pipeline_tag == "text-to-image"


def test_the_license_comes_from_the_folder_when_recorded_and_is_never_guessed(exported, monkeypatch):
    hub = RecordingHub(monkeypatch)
    with pytest.raises(ModelFolderError, match="license .* cannot be determined.*--license"):
        push_to_hub(exported, "me/tiny")
    metadata = json.loads((exported / "conversion_metadata.json").read_text())
    (exported / "conversion_metadata.json").write_text(json.dumps({**metadata, "license": "apache-2.0"}))
    push_to_hub(exported, "me/tiny")
    assert ModelCard(hub.uploaded["README.md"].decode()).data.license == "apache-2.0"


@pytest.mark.parametrize(
    "change, arguments, message",
    [
        (None, ["me"], "repo id must be owner/name"),
        (None, ["me/a/b"], "repo id must be owner/name"),
        (None, ["me/tiny", "--subfolder", "../up"], "--subfolder must be a relative folder name"),
        ("no_code", ["me/tiny"], "is not self-contained .*pixelgen export"),
        ("bad_import", ["me/tiny"], "imports pixelgen_diffusers"),
        ("no_weights", ["me/tiny"], "cannot load"),
        ("no_token", ["me/tiny"], "no Hugging Face token"),
        (None, ["me/tiny"], "--license"),
        (None, ["me/tiny", "--license", "mit", "--sample-grid", "README.md"], "is not a PNG"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_uploaded(exported, monkeypatch, capsys, change, arguments, message):
    hub = RecordingHub(monkeypatch, token=None if change == "no_token" else "hf_test")
    if change == "no_code":
        (exported / "pipeline.py").unlink()
    elif change == "bad_import":
        code = exported / "transformer" / "transformer_jit.py"
        code.write_text("import pixelgen_diffusers\n" + code.read_text())
    elif change == "no_weights":
        (exported / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    monkeypatch.chdir(exported)
    assert main(["push", str(exported), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pixelgen push: error:" in error
    assert re.search(message, error), error
    assert hub.calls == []


def test_export_and_convert_record_a_stated_license_and_base_model_on_the_card(tmp_path, capsys):
    from components import upstream_c2i_state_dict, upstream_lightning_checkpoint

    folder = export_pipeline(tiny_c2i_pipeline(), tmp_path / "a", license="apache-2.0", base_model="me/base")
    card = ModelCard((folder / "README.md").read_text())
    assert (card.data.license, card.data.base_model, card.data.library_name) == ("apache-2.0", "me/base", "diffusers")
    assert "released under `apache-2.0`" in card.text
    # Exporting the folder again keeps what it records.
    again = export_pipeline(folder, tmp_path / "b")
    assert ModelCard((again / "README.md").read_text()).data.license == "apache-2.0"

    checkpoint = tmp_path / "model.ckpt"
    state_dict = upstream_c2i_state_dict()
    torch.save(upstream_lightning_checkpoint(state_dict, state_dict), checkpoint)
    assert main(["convert", str(checkpoint), str(tmp_path / "c"), "--license", "mit", "--in-context-start", "1"]) == 0
    assert ModelCard((tmp_path / "c" / "README.md").read_text()).data.license == "mit"
    assert main(["convert", str(checkpoint), str(tmp_path / "d"), "--license", "MIT License"]) == 2
    assert "--license must be a Hub license id" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
