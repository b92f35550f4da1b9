"""`pixelgen demo`'s server settings and lifetime: Gradio's environment variables (the flags win), one-line errors
for a bad host, a busy port and an unusable device before the model loads, exit status 130 on Ctrl-C, and generated
PNGs that do not pile up in the app's folder."""

import socket
import threading
import time

import pytest
from test_faults import assert_one_line, run_cli

from pixelgen_diffusers.cli.demo import server_address
from pixelgen_diffusers.demo import app as app_module


def test_gradio_environment_variables_are_honoured_and_flags_win(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert server_address(None, None) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    assert server_address(None, None) == ("0.0.0.0", 7999)
    assert server_address("127.0.0.1", 8001) == ("127.0.0.1", 8001)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(ValueError, match="GRADIO_SERVER_PORT must be a port number"):
        server_address(None, None)


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["--host", "999.1.1.1"], "--host '999.1.1.1' is not a valid IPv4 address"),
        (["--port", "70000"], "--port must be in [1, 65535], got 70000"),
        (["--device", "meta"], "--device meta holds no data"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_server_settings_and_devices_are_one_line_before_the_model_loads(capsys, arguments, fragment):
    pytest.importorskip("gradio")
    code, _, err = run_cli(capsys, "demo", *arguments)
    assert_one_line(code, err, "demo", fragment)


def _serve_and_interrupt(port: int, interrupt_after: float | None):
    """`pixelgen demo` in this process; Ctrl-C (a KeyboardInterrupt in the main thread) once the port answers."""
    import _thread

    def interrupt():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        _thread.interrupt_main()

    if interrupt_after is not None:
        threading.Thread(target=interrupt, daemon=True).start()
    from pixelgen_diffusers import cli

    return cli.main(["demo", "--port", str(port)])


def test_ctrl_c_ends_the_demo_with_status_130_and_a_busy_port_names_the_option(capsys):
    pytest.importorskip("gradio")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = _serve_and_interrupt(port, interrupt_after=None)
        err = capsys.readouterr().err
        assert_one_line(code, err, "demo", f"cannot serve on 127.0.0.1:{port}")
        assert "choose another with --port" in err and "GRADIO_SERVER_PORT environment variable" not in err
    code = _serve_and_interrupt(port, interrupt_after=0)
    assert code == 130 and "interrupted" in capsys.readouterr().err


def test_generated_pngs_do_not_pile_up_in_the_apps_folder(monkeypatch):
    from pixelgen_diffusers.conversion.hub import load_pipeline
    from pixelgen_diffusers.demo import model_dir

    pipeline = load_pipeline(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    monkeypatch.setattr(app_module, "KEPT_RUNS", 2)
    demo = app_module.PixelGenDemo(pipeline)
    settings = demo.recipe()
    settings = app_module.replace(settings, num_inference_steps=1)
    results = [list(demo.generate(["circle"], settings))[-1] for _ in range(4)]
    assert len(list(demo.output_dir.rglob("*.png"))) == 2  # the last two runs' images
    assert all(path.is_file() for path in results[-1].paths)
