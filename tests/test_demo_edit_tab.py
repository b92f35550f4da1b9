"""The web demo's Edit tab: its logic on the bundled model, and the tab driven in a real headless Chromium (the
browser and served-app fixtures are test_demo_app's)."""

import io
import time
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch
from test_demo_app import browser, demo_pipeline, served_demo  # noqa: F401 (fixtures)

from pixelgen_diffusers import PixelGenC2IInpaintPipeline
from pixelgen_diffusers.demo.app import PixelGenDemo, edit_image, editor_image_and_mask
from pixelgen_diffusers.evaluation.demo_edit import make_mask, real_shapes


def editor_value(image: np.ndarray, painted: np.ndarray | None) -> dict:
    """What Gradio's ImageEditor hands over: the background and a transparent layer with white paint."""
    layer = np.zeros((*image.shape[:2], 4), dtype=np.uint8)
    if painted is not None:
        layer[painted > 0] = 255
    return {"background": PIL.Image.fromarray(image), "layers": [PIL.Image.fromarray(layer, "RGBA")]}


def test_painted_pixels_are_the_mask_and_the_rest_comes_back_exactly(demo_pipeline):  # noqa: F811
    demo = PixelGenDemo(demo_pipeline)
    image = real_shapes(1)[0][0].numpy()
    mask = make_mask("centre")
    _, drawn = editor_image_and_mask(editor_value(image, mask))
    assert np.array_equal(np.asarray(drawn), mask)
    edited = np.asarray(edit_image(demo, editor_value(image, mask), "star", 1.0, 1.0, 3))
    expected = PixelGenC2IInpaintPipeline.from_pipe(demo_pipeline)(
        8, image=image, mask_image=mask, generator=torch.Generator().manual_seed(3)
    ).images[0]
    assert np.array_equal(edited, np.asarray(expected))
    assert np.array_equal(edited[mask == 0], image[mask == 0])
    # Nothing painted: image-to-image of the whole image; strength 0 keeps it.
    assert editor_image_and_mask(editor_value(image, None))[1] is None
    assert np.array_equal(np.asarray(edit_image(demo, editor_value(image, None), "star", 0.0, 1.0, 0)), image)


@pytest.mark.parametrize(
    "value, entry, message",
    [
        ({"background": None, "layers": []}, "star", "no image to edit"),
        (editor_value(np.zeros((40, 40, 3), dtype=np.uint8), None), "star", "image must be 32x32"),
        (editor_value(np.zeros((32, 32, 3), dtype=np.uint8), None), "unicorn", "unknown class 'unicorn'"),
    ],
)
def test_edit_errors_name_the_problem(demo_pipeline, value, entry, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        edit_image(PixelGenDemo(demo_pipeline), value, entry, 1.0, 1.0, 0)


def test_in_a_browser_a_person_takes_a_generated_image_paints_and_edits_it(browser, served_demo):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(served_demo)
    picker = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#class-picker input")))
    picker.click()
    picker.send_keys("circ")
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#class-picker li[role=option]"))).click()
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), "Done"))

    edit_tab = next(
        button for button in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if button.text == "Edit"
    )
    edit_tab.click()
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#edit-take"))).click()
    canvas = wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, "#edit-editor canvas")))
    time.sleep(1)
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(10, 10).release().perform()
    picker = browser.find_element(By.CSS_SELECTOR, "#edit-class input")
    picker.click()
    picker.send_keys("sta")
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#edit-class li[role=option]"))).click()
    browser.find_element(By.CSS_SELECTOR, "#edit-run").click()
    wait.until(shown.text_to_be_present_in_element((By.CSS_SELECTOR, "#edit-status"), "Done: edited"))

    # The painted stroke is repainted, every other pixel is the generated image's, exactly.
    def shown_image(selector):
        source = browser.find_element(By.CSS_SELECTOR, selector).get_attribute("src")
        with urllib.request.urlopen(source) as response:
            return np.asarray(PIL.Image.open(io.BytesIO(response.read())).convert("RGB"))

    edited, generated = shown_image("#edit-result img"), shown_image("#gallery img")
    assert edited.shape == generated.shape == (32, 32, 3)
    changed = (edited != generated).any(axis=2)
    assert 0 < changed.sum() < 0.5 * changed.size
