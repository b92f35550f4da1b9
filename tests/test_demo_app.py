"""`pixelgen demo`: the app's logic on real pipelines, and the app itself driven in a real headless Chromium."""

import contextlib
import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from components import tiny_c2i_pipeline, tiny_qwen3, tiny_qwen_tokenizer, tiny_t2i_pipeline, tiny_transformer

from pixelgen_diffusers import PixelGenC2IPipeline, PixelGenScheduler, imagenet_id2label
from pixelgen_diffusers.cli import main as cli_main
from pixelgen_diffusers.conversion.hub import load_pipeline
from pixelgen_diffusers.demo import CLASS_NAMES, model_dir
from pixelgen_diffusers.demo.app import FRAME_SIZE, PixelGenDemo, Result, SamplingSettings
from pixelgen_diffusers.demo.classifier import load_classifier


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_pipeline():
    pipeline = load_pipeline(model_dir())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def settings(**overrides) -> SamplingSettings:
    values = dict(
        num_images=2,
        seed=5,
        sampling_method="heun",
        num_inference_steps=3,
        guidance_scale=2.0,
        guidance_interval_min=0.1,
        guidance_interval_max=0.9,
        timeshift=1.5,
    )
    return SamplingSettings(**{**values, **overrides})


def run_to_the_end(demo, entries, sampling_settings, **kwargs):
    """(streamed progress updates, the Result)."""
    updates = list(demo.generate(entries, sampling_settings, **kwargs))
    assert isinstance(updates[-1], Result)
    return updates[:-1], updates[-1]


def assert_same_pixels(path_a, path_b):
    """Equal up to one uint8 level (batch composition may change float rounding)."""
    a, b = (np.asarray(PIL.Image.open(path)).astype(int) for path in (path_a, path_b))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


# ------------------------------------------------------------------------------------------------ the app's logic
def test_defaults_come_from_the_folders_recipe(demo_pipeline):
    recipe = PixelGenDemo(demo_pipeline).recipe()
    assert (recipe.sampling_method, recipe.num_inference_steps, recipe.guidance_scale) == ("euler", 10, 3.0)
    assert (recipe.guidance_interval_min, recipe.guidance_interval_max, recipe.timeshift) == (0.0, 1.0, 1.0)
    other = PixelGenDemo(tiny_c2i_pipeline(sampling_method="adam_lm", timeshift=2.5, num_inference_steps=7)).recipe()
    assert (other.sampling_method, other.timeshift, other.num_inference_steps) == ("adam_lm", 2.5, 7)


def test_images_equal_what_the_shown_command_writes_and_the_trajectory_streams(demo_pipeline, tmp_path):
    demo = PixelGenDemo(demo_pipeline)
    progress, result = run_to_the_end(demo, ["circle", "8"], settings())
    assert [path.name for path in result.paths] == [
        "1-circle-seed5.png",
        "1-circle-seed6.png",
        "8-star-seed5.png",
        "8-star-seed6.png",
    ]
    assert result.captions[2] == "star · seed 5"
    # Heun, 3 steps: 5 model evaluations, each streamed with the trajectory so far (a row per image).
    assert [(evaluation, total) for evaluation, total, _ in progress] == [(k, 5) for k in range(1, 6)]
    pitch = FRAME_SIZE + 4
    assert progress[0][2].size == (FRAME_SIZE, 4 * pitch - 4)
    assert result.trajectory.size == (5 * pitch - 4, 4 * pitch - 4)
    # The last frame of a row is the last prediction, which Heun's final Euler step lands on: the image itself.
    last_frame = result.trajectory.crop((4 * pitch, 0, 4 * pitch + FRAME_SIZE, FRAME_SIZE))
    last_frame = last_frame.resize((32, 32), PIL.Image.NEAREST)  # undoes the enlargement
    image = np.asarray(PIL.Image.open(result.paths[0])).astype(int)
    assert np.abs(np.asarray(last_frame).astype(int) - image).max() <= 1

    argv = shlex.split(result.command)
    assert argv[:4] == ["pixelgen", "generate", "--class", "circle"] and "--model" not in argv
    assert cli_main([*argv[1:], "--device", "cpu", "--out", str(tmp_path)]) == 0
    for path in result.paths:
        assert_same_pixels(path, tmp_path / path.name)


def test_the_command_names_the_model_and_dtype_and_uses_ids_for_ambiguous_names():
    pipe = tiny_c2i_pipeline()
    pipe.register_to_config(
        id2label={"0": "crane", "1": "crane, bird", "2": "heron, crane", **{str(i): f"c{i}" for i in range(3, 10)}}
    )
    pipe._label_candidates = None
    demo = PixelGenDemo(pipe, model="owner/repo/c2i", dtype="bfloat16")
    command = shlex.split(demo.command([0, 1, 2], settings()))
    assert command[2:4] == ["--model", "owner/repo/c2i"] and command[-2:] == ["--dtype", "bfloat16"]
    # "crane" is the first name of both 0 and 1 (ambiguous: ids); class 2's "heron" is its own name.
    assert command[4:10] == ["--class", "0", "--class", "1", "--class", "heron"]


@pytest.mark.parametrize(
    "entries, overrides, message",
    [
        (["circel"], {}, "Did you mean 'circle'"),
        ([], {}, "no class chosen"),
        (["42"], {}, "out of range"),
        (["circle"], {"num_inference_steps": 0}, "num inference steps must be a number in [1, 250], got 0"),
        (["circle"], {"guidance_scale": float("nan")}, "guidance scale must be a number in"),
        (["circle"], {"timeshift": 0.0}, "timeshift must be a number in [0.1, 10.0], got 0.0"),
        (["circle"], {"guidance_interval_min": 0.9, "guidance_interval_max": 0.1}, "must not exceed the end"),
        (["circle"], {"sampling_method": "ddim"}, "sampler 'ddim' is unknown; accepted: heun, euler, adam_lm"),
        (["circle"], {"num_images": 9}, "num images must be a number in [1, 8]"),
        (["circle"], {"seed": -1}, "seed must be a number in"),
        (["circle"], {"num_inference_steps": 2.5}, "must be a whole number"),
    ],
)
def test_bad_entries_are_rejected_before_any_work(demo_pipeline, entries, overrides, message):
    updates = PixelGenDemo(demo_pipeline).generate(entries, settings(**overrides))
    with pytest.raises(ValueError) as error:
        next(updates)
    assert message in str(error.value)
    assert "pixelgen-demo-sampling" not in [thread.name for thread in threading.enumerate()]  # nothing sampled


def test_every_imagenet_synonym_is_findable_by_typing():
    transformer = tiny_transformer(num_classes=1000)
    pipe = PixelGenC2IPipeline(transformer, PixelGenScheduler(), id2label=imagenet_id2label())
    demo = PixelGenDemo(pipe)
    choices = demo.class_choices()
    assert len(choices) == 1000
    shown = {int(value): text.lower() for text, value in choices}
    for class_id, names in imagenet_id2label().items():
        assert all(name.strip().lower() in shown[class_id] for name in names.split(","))
    assert demo.conditions(["golden retriever", "207", "Tinca tinca"]) == [207, 0]


def test_text_to_image_models_get_prompts_and_the_same_controls(tmp_path):
    pipe = tiny_t2i_pipeline(sampling_method="euler", num_inference_steps=2)
    demo = PixelGenDemo(pipe, model=str(tmp_path / "t2i"))
    assert demo.text_to_image
    overrides = dict(sampling_method="adam_lm", num_inference_steps=3, num_images=1)
    progress, result = run_to_the_end(demo, "a red circle", settings(**overrides), negative_prompt="blurry")
    assert len(progress) == 3 and result.paths[0].name == "00-a_red_circle-seed5.png"
    command = shlex.split(result.command)
    assert command[command.index("--prompt") + 1] == "a red circle"
    assert command[command.index("--negative-prompt") + 1] == "blurry"
    expected = pipe(
        prompt=["a red circle"],
        negative_prompt="blurry",
        generator=[torch.Generator().manual_seed(5)],
        guidance_scale=2.0,
        guidance_interval_min=0.1,
        guidance_interval_max=0.9,
        timeshift=1.5,
        **{"sampling_method": "adam_lm", "num_inference_steps": 3},
    ).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(result.paths[0])), np.asarray(expected))
    with pytest.raises(ValueError, match="prompt is empty"):
        next(demo.generate("  ", settings()))


def test_a_failing_run_is_reported_and_the_next_run_works(tmp_path):
    # A text-to-image folder without its text encoder, whose configured encoder cannot be loaded: the run fails.
    pipe = tiny_t2i_pipeline(with_text_encoder=False, text_encoder_id=str(tmp_path / "no_encoder"))
    demo = PixelGenDemo(pipe)
    with pytest.raises(RuntimeError, match="sampling failed: A text prompt needs the text encoder"):
        run_to_the_end(demo, "a cat", settings(num_images=1))
    pipe.register_modules(text_encoder=tiny_qwen3(), tokenizer=tiny_qwen_tokenizer())
    assert run_to_the_end(demo, "a cat", settings(num_images=1))[1].paths[0].is_file()


def test_pipeline_code_without_the_prediction_still_samples_without_a_trajectory(demo_pipeline, monkeypatch):
    # As a folder converted by an older version runs its own code: callbacks get only the latents.
    monkeypatch.setattr(demo_pipeline, "_callback_tensor_inputs", ["latents"])
    demo = PixelGenDemo(demo_pipeline)
    progress, result = run_to_the_end(demo, ["circle"], settings(num_images=1))
    assert len(progress) == 5 and progress[-1][2] is None and result.trajectory is None
    assert result.paths[0].is_file()
    del demo  # its files go with it
    assert not result.paths[0].exists()


def test_closing_the_stream_stops_sampling(demo_pipeline):
    demo = PixelGenDemo(demo_pipeline)
    updates = demo.generate(["circle"], settings(num_inference_steps=50))
    next(updates)
    updates.close()  # as Gradio does when the page goes away
    assert demo_pipeline.interrupt and not demo._lock.locked()


def test_missing_gradio_is_a_one_line_error_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert cli_main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith('pixelgen demo: error: the demo needs Gradio: pip install "pixelgen-diffusers[demo]"')


# ------------------------------------------------------------------------------------------- in a real browser
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require(condition: bool, reason: str) -> None:
    """Skips where the browser or the extra cannot be had; on CI (which installs both) that is a failure."""
    if not condition:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require(
        shutil.which("chromium") is not None and shutil.which("chromedriver") is not None,
        "no browser: Chromium and its driver are not installed (apt-get install chromium chromium-driver)",
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, 'Selenium is not installed (pip install "pixelgen-diffusers[test]")')
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1150"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served_demo(demo_pipeline):
    """The bundled model's app, served as `pixelgen demo` serves it, on a free local port."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        require(False, 'Gradio is not installed (pip install "pixelgen-diffusers[demo]")')
    from pixelgen_diffusers.demo.app import build_app, launch_app

    app = build_app(demo_pipeline)
    port = free_port()
    launch_app(app, port=port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_in_a_browser_a_person_picks_a_class_generates_downloads_and_sees_errors(browser, served_demo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(served_demo)
    picker = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#class-picker input")))

    # Type part of a class name; only matching classes are offered; pick the match.
    picker.click()
    picker.send_keys("circ")
    option = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#class-picker li[role=option]")))
    offered = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#class-picker li[role=option]")]
    assert offered == ["circle (1)"]
    option.click()
    count = browser.find_element(By.CSS_SELECTOR, "#num-images input[type=number]")
    count.send_keys(Keys.CONTROL, "a")
    count.send_keys("4", Keys.TAB)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()

    # Results, the trajectory (10 Euler evaluations, a row per image) and the files to download appear.
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), "Done: 4 image(s), seed 0."))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery img")) == 4
    trajectory = browser.find_element(By.CSS_SELECTOR, "#trajectory img")
    size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", trajectory)
    assert size == [10 * (FRAME_SIZE + 4) - 4, 4 * (FRAME_SIZE + 4) - 4]
    assert "pixelgen generate --class circle --num-images 4 --seed 0" in browser.find_element(By.ID, "command").text

    # The screenshot in docs/demo-models.md (PIXELGEN_UPDATE_SCREENSHOT=1 refreshes docs/demo-app.png).
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = tmp_path / "demo-app.png"
    browser.save_screenshot(str(screenshot))
    if os.environ.get("PIXELGEN_UPDATE_SCREENSHOT"):
        shutil.copyfile(screenshot, ROOT / "docs" / "demo-app.png")

    link = browser.find_element(By.CSS_SELECTOR, "#downloads a[download='1-circle-seed0.png']")
    link.click()
    downloaded = browser.downloads / "1-circle-seed0.png"
    deadline = time.monotonic() + 20
    while not downloaded.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    image = np.asarray(PIL.Image.open(downloaded).convert("RGB"))
    assert image.shape == (32, 32, 3)
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        assert load_classifier()(pixels).argmax().item() == CLASS_NAMES.index("circle")

    # An invalid entry: a class the model does not have. The page says so, and stays usable.
    picker.click()
    picker.send_keys("unicorn", Keys.ENTER)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), "unknown class 'unicorn'"))
    assert browser.find_element(By.CSS_SELECTOR, "#generate").is_enabled()


def test_concurrent_users_are_queued_and_get_their_own_images(served_demo, demo_pipeline, tmp_path):
    from gradio_client import Client

    client = Client(served_demo, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    recipe = ("euler", 10, 3.0, 0.0, 1.0, 1.0)
    random_seed = client.predict(0, True, api_name="/choose_seed")
    assert 0 <= random_seed < 2**32 and client.predict(17, False, api_name="/choose_seed") == 17
    jobs = [
        client.submit(["8"], 2, 3, *recipe, api_name="/generate"),
        client.submit(["heart"], 1, random_seed, *recipe, api_name="/generate"),
    ]
    (stars, _, star_command, _, _, _), (hearts, _, _, _, settings, status) = (job.result(timeout=60) for job in jobs)
    assert [item["caption"] for item in stars] == ["star · seed 3", "star · seed 4"]
    assert "--class star --num-images 2 --seed 3" in star_command
    assert settings["seed"] == random_seed and status == f"Done: 1 image(s), seed {random_seed}."
    assert hearts[0]["caption"] == f"heart · seed {random_seed}"
    # Each user gets exactly the images a direct call makes with their class and seed (nothing mixed up).
    for item, class_id, seed in ((stars[1], 8, 4), (hearts[0], 5, random_seed)):
        expected = demo_pipeline(class_id, generator=torch.Generator().manual_seed(seed)).images[0]
        difference = np.asarray(PIL.Image.open(item["image"]).convert("RGB")).astype(int) - np.asarray(expected)
        assert np.abs(difference).max() <= 1


def test_text_to_image_app_takes_prompts(tmp_path):
    require(
        importlib.util.find_spec("gradio") is not None,
        'Gradio is not installed: pip install "pixelgen-diffusers[demo]"',
    )
    from gradio_client import Client

    from pixelgen_diffusers.demo.app import build_app, launch_app

    app = build_app(tiny_t2i_pipeline(sampling_method="euler", num_inference_steps=2), model="my/t2i")
    component_ids = {block.elem_id for block in app.blocks.values()}
    assert {"prompt", "negative-prompt"} <= component_ids and "class-picker" not in component_ids
    port = free_port()
    launch_app(app, port=port, block=False, quiet=True)
    try:
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False, download_files=str(tmp_path)
        )
        gallery, trajectory, command, files, _, status = client.predict(
            "a red circle", "blurry", 1, 7, "euler", 2, 4.0, 0.0, 1.0, 3.0, api_name="/generate"
        )
    finally:
        app.close()
    assert status == "Done: 1 image(s), seed 7." and gallery[0]["caption"] == "a red circle · seed 7"
    assert command.startswith("pixelgen generate --model my/t2i --prompt 'a red circle' --negative-prompt blurry")
    assert PIL.Image.open(trajectory).size == (2 * (FRAME_SIZE + 4) - 4, FRAME_SIZE)
    assert [Path(path).name for path in files] == ["00-a_red_circle-seed7.png"]


@contextlib.contextmanager
def pixelgen_demo_server(tmp_path, *arguments):
    """Runs `pixelgen demo ARGUMENTS` in a subprocess (offline: HF_HUB_OFFLINE=1) until it serves its page; yields
    (port, page), then stops it."""
    require(
        importlib.util.find_spec("gradio") is not None,
        'Gradio is not installed: pip install "pixelgen-diffusers[demo]"',
    )
    port = free_port()
    command = [sys.executable, "-m", "pixelgen_diffusers.cli", "demo", *arguments, "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "pixelgen demo did not start serving within 90 s"
                time.sleep(0.5)
        yield port, page
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_pixelgen_demo_serves_the_bundled_model_on_localhost_only(tmp_path):
    with pixelgen_demo_server(tmp_path, "--device", "cpu") as (port, page):
        assert "PixelGen" in page
        # Listening sockets on that port (/proc/net/tcp: hex address:port, state 0A = LISTEN) are loopback only.
        listening = [
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
        ]
        assert listening == [f"0100007F:{port:04X}"]


def test_pixelgen_demo_text_to_image_serves_the_bundled_t2i_model_offline(tmp_path):
    from gradio_client import Client

    with pixelgen_demo_server(tmp_path, "--text-to-image", "--device", "cpu") as (port, page):
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False, download_files=str(tmp_path)
        )
        gallery, _, command, files, _, status = client.predict(
            "a red star on a blue background", "", 1, 3, "euler", 4, 4.0, 0.0, 1.0, 1.0, api_name="/generate"
        )
    assert status == "Done: 1 image(s), seed 3."
    # The app runs the bundled text-to-image model: the command it shows (`pixelgen generate --prompt` without
    # --model, which uses that model) writes the same image.
    argv = shlex.split(command)
    assert argv[:4] == ["pixelgen", "generate", "--prompt", "a red star on a blue background"]
    assert "--model" not in argv
    out = tmp_path / "cli"
    assert cli_main([*argv[1:], "--device", "cpu", "--out", str(out)]) == 0
    assert [Path(path).name for path in files] == [path.name for path in sorted(out.glob("*.png"))]
    assert_same_pixels(gallery[0]["image"], out / Path(files[0]).name)


def test_pixelgen_demo_text_to_image_and_model_together_are_one_line_error(capsys):
    require(
        importlib.util.find_spec("gradio") is not None,
        'Gradio is not installed: pip install "pixelgen-diffusers[demo]"',
    )
    assert cli_main(["demo", "--text-to-image", "--model", "some/model"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pixelgen demo: error: --text-to-image serves the bundled text-to-image demo model")
    assert "\n" not in error


def test_pixelgen_demo_rejects_a_bad_port_in_one_line(capsys):
    require(
        importlib.util.find_spec("gradio") is not None,
        'Gradio is not installed: pip install "pixelgen-diffusers[demo]"',
    )
    assert cli_main(["demo", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "pixelgen demo: error: --port must be in [1, 65535], got 70000"
