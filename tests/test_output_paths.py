"""Output folders (`--out`, `--output-dir`, OUTPUT_DIR) are checked before any work, with one line naming the option,
the path and the problem, and `~` is expanded as in model paths."""

import os

import pytest
from test_cli import assert_one_line_error, run_cli

from pixelgen_diffusers.utils import check_output_folder


def _commands(tmp_path, out):
    missing = tmp_path / "no-such-model"  # checked after the output: a model error would mean the order is wrong
    return {
        "generate": (["generate", "--model", missing, "--class", "0", "--out", out], "--out"),
        "sample": (["sample", "--model", missing, "--num-samples", "1", "--out", out], "--out"),
        "train": (["train", "--data-dir", missing, "--max-steps", "1", "--output-dir", out], "--output-dir"),
        "export": (["export", missing, out], "OUTPUT_DIR"),
        "convert": (["convert", missing / "model.pth", out], "OUTPUT_DIR"),
    }


@pytest.mark.parametrize("command", ["generate", "sample", "train", "export", "convert"])
def test_an_output_path_under_or_at_a_file_is_one_line_naming_the_option_before_any_work(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, problem in ((afile, "exists and is not a folder"), (afile / "sub", "is a file, not a folder")):
        argv, option = _commands(tmp_path, out)[command]
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, command, f"{option} {out}: ")
        assert problem in err and "Errno" not in err
    assert afile.read_text() == "x"


@pytest.mark.parametrize("command", ["generate", "sample", "train", "export", "convert"])
def test_an_unwritable_output_location_is_named_before_any_work(tmp_path, capsys, monkeypatch, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Root may write anywhere, so a chmod cannot stand for an unwritable folder here; the OS answer is replaced.
    monkeypatch.setattr(os, "access", lambda path, mode: not _same_path(path, locked) and real_access(path, mode))
    argv, option = _commands(tmp_path, locked / "run")[command]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, command, f"{option} {locked / 'run'}: its parent {locked} is not writable")
    assert not (locked / "run").exists()


def _same_path(path, other) -> bool:
    return os.path.abspath(path) == os.path.abspath(other)


def test_tilde_is_expanded_in_output_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_output_folder("~/x", "--out") == tmp_path / "x"
    assert not (tmp_path / "x").exists()  # checking creates nothing


def test_generate_writes_under_the_home_folder_for_a_tilde_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "generate", "--class", "circle", "--steps", "2", "--out", "~/x")
    assert code == 0, err
    assert [path.name for path in (tmp_path / "x").iterdir()] == ["1-circle-seed0.png"]
    assert not (tmp_path / "~").exists()
