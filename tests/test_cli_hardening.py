"""Command-line checks made before any work, and one-line errors: eval-demo's model kind and --json file, labels on
a malformed id2label, sample's cache remedy and sampling_config.json, --seed range, Hub-looking values offline."""

import json

import pytest
import torch
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
