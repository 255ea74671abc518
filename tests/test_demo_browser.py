"""The demo page in headless Chromium: pick an example, press Segment, see the result (screenshot saved).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the Python
package ``selenium``; the test is skipped only when Chromium or its driver is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from test_demo import (
    EXAMPLE_FRAMES,
    EXAMPLE_SIZE,
    TEST_LIMITS,
    running_demo,
    write_example_videos,
    write_mp4,
)

from videolisa.demo import DemoExample, find_examples
from videolisa.predictor import VideoLisaPredictor

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Headless, no sandbox (containers run as root), no GPU, and nothing that reaches the network on its own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1500",
)
RESULT_TIMEOUT_S = 60

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="Chromium is not installed (Debian packages chromium and chromium-driver; .ci/run installs them)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    """Headless Chromium with a fresh profile, driven by the system chromedriver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def demo_app(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, VideoLisaPredictor, DemoExample]]:
    """The demo served with the tiny model: (URL, its predictor, the first example)."""
    examples_dir = write_example_videos(tmp_path_factory.mktemp("browser") / "examples")
    predictor = VideoLisaPredictor.from_pretrained(tiny_model_dir, device="cpu")
    with running_demo(predictor, examples_dir, TEST_LIMITS) as url:
        yield url, predictor, find_examples(examples_dir)[0]


def test_page_segments_an_example_and_shows_the_result(
    browser: Chrome, demo_app: tuple[str, VideoLisaPredictor, DemoExample], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, predictor, example = demo_app
    key_indices = sorted(set(predictor.sample_frames(EXAMPLE_FRAMES)[1]))
    browser.get(url)
    wait = WebDriverWait(browser, RESULT_TIMEOUT_S)
    # The instruction cell of the first example (data-testid is Gradio's stable test hook).
    first_example = "#examples [data-testid='dataset-cell-0-1']"
    wait.until(lambda page: page.find_element(By.CSS_SELECTOR, first_example)).click()
    instruction_box = browser.find_element(By.CSS_SELECTOR, "#instruction textarea")
    wait.until(lambda page: instruction_box.get_attribute("value") == example.instruction)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#input-video video"))
    browser.find_element(By.ID, "segment-button").click()

    wait.until(lambda page: "frames_per_second" in page.find_element(By.ID, "timings").text)
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#key-frames img")) == len(key_indices))
    overlay = browser.find_element(By.CSS_SELECTOR, "#overlay-video video")
    # readyState >= 2: the browser decoded the overlay's first frame (H.264 plays in this Chromium).
    wait.until(lambda page: page.execute_script("return arguments[0].readyState", overlay) >= 2)
    screenshot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot))

    assert overlay.get_attribute("src").endswith("_overlay.mp4")
    size = browser.execute_script("return [arguments[0].videoHeight, arguments[0].videoWidth]", overlay)
    assert tuple(size) == EXAMPLE_SIZE
    gallery_text = browser.find_element(By.ID, "key-frames").text
    assert all(f"frame {index}" in gallery_text for index in key_indices), gallery_text
    download = browser.find_element(By.CSS_SELECTOR, "#masks-zip a")
    assert download.get_attribute("href").endswith("_masks.zip")
    assert screenshot.stat().st_size > 10_000


def write_broken_video(path: Path) -> Path:
    path.write_bytes(b"this is not a video" * 20)
    return path


def write_video_of_large_frames(path: Path) -> Path:
    """Two 200x200 frames: over TEST_LIMITS' 0.03 megapixels per frame."""
    return write_mp4(path, np.zeros((2, 200, 200, 3), dtype=np.uint8), fps=10.0)


@pytest.mark.parametrize(
    "write_upload, message",
    [
        (write_broken_video, "cannot read video file broken.mp4"),
        (write_video_of_large_frames, "this demo accepts frames up to 0.03 megapixels"),
    ],
    ids=["unreadable", "large-frames"],
)
def test_page_shows_a_friendly_error_for_a_refused_upload(
    browser: Chrome,
    demo_app: tuple[str, VideoLisaPredictor, DemoExample],
    tmp_path: Path,
    write_upload: Callable[[Path], Path],
    message: str,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    upload = write_upload(tmp_path / "broken.mp4")
    browser.get(demo_app[0])
    wait = WebDriverWait(browser, RESULT_TIMEOUT_S)
    wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#input-video input[type=file]")).send_keys(str(upload))
    # The limits are on the page before anything is sent.
    assert "frames up to 0.03 megapixels" in browser.find_element(By.ID, "limits").text
    browser.find_element(By.CSS_SELECTOR, "#instruction textarea").send_keys("the red square")
    browser.find_element(By.ID, "segment-button").click()
    wait.until(lambda page: message in page.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(tmp_path / "error.png"))
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
