"""The demo as its users meet it: served on a loopback port, called with gradio_client, and used in a real browser
(Debian's chromium, driven by selenium) -- from `rdmldg demo MODEL` and from the Space folder it writes."""

from __future__ import annotations

import pytest
import yaml
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers.demo import REASONED_CLASS, chromium, demo_server, example_png, reasoning_model
from helpers.evaluation import trained_adapter
from rdmldg_hf import DGClassifier
from rdmldg_hf.cli import main
from rdmldg_hf.evaluation.predict import decode_image
from rdmldg_hf.testing import oversized_png

pytestmark = [pytest.mark.slow, pytest.mark.server]


CALL_SECONDS = 120  # the longest any one request may take


def call(client: Client, image, endpoint: str):
    """One request to ``endpoint``, waited for at most CALL_SECONDS."""
    return client.submit(image, api_name=endpoint).result(timeout=CALL_SECONDS)


def assert_same_probabilities(served: dict, expected: dict) -> None:
    assert list(served) == list(expected)  # every class, in class order
    assert max(abs(served[name] - expected[name]) for name in expected) < 1e-5


def test_client_gets_the_classifiers_answers_and_bad_uploads_get_messages(tmp_path):
    adapter = trained_adapter()
    classifier = DGClassifier.from_pretrained(adapter)
    paths = [example_png(tmp_path, index) for index in (0, 900)]
    images = [decode_image(str(path)) for path in paths]
    direct = classifier.predict(images, mode="direct")
    chains = classifier.predict(images, mode="reasoning")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(oversized_png(20_000, 20_000))
    with demo_server(tmp_path, str(adapter), "--device", "cpu") as url:
        client = Client(url, verbose=False, download_files=False)
        for path, expected, chain in zip(paths, direct, chains):
            assert_same_probabilities(call(client, handle_file(str(path)), "/classify"), expected.probabilities)
            assert call(client, handle_file(str(path)), "/reason") == [chain.text, chain.label]
        job = client.submit(handle_file(str(paths[0])), api_name="/reason")
        job.result(timeout=CALL_SECONDS)
        streamed = [text for text, _ in job.outputs()]
        assert len(streamed) > 2 and streamed[-1] == chains[0].text
        assert all(later.startswith(earlier) for earlier, later in zip(streamed[:-1], streamed[1:-1]))

        for bad, message in (
            (handle_file(str(notes)), r"Cannot classify 'notes.txt': unreadable image: .*Upload an image file"),
            (handle_file(str(huge)), r"'huge.png': .*400000000 pixels.* not decoded"),
            (None, "No image was given"),
            ({"path": str(paths[0])}, "not a file uploaded to this server"),  # a path on the server's disk
        ):
            for endpoint in ("/classify", "/reason"):
                with pytest.raises(AppError, match=message):
                    call(client, bad, endpoint)
        # Still serving; two users at once wait their turn and both get the answer.
        jobs = [client.submit(handle_file(str(paths[1])), api_name="/classify") for _ in range(2)]
        for job in jobs:
            assert_same_probabilities(job.result(timeout=CALL_SECONDS), direct[1].probabilities)


@pytest.mark.browser
def test_space_folder_serves_the_same_answers_to_a_client_and_a_browser(tmp_path):
    model = reasoning_model()
    classifier = DGClassifier.from_pretrained(model)
    path = example_png(tmp_path, 3)
    image = decode_image(str(path))
    direct = classifier.predict([image], mode="direct")[0]
    chain = classifier.predict([image], mode="reasoning")[0]
    assert chain.label == REASONED_CLASS

    space = tmp_path / "space"
    assert main(["demo", str(model), "--space-dir", str(space)]) == 0
    front_matter = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert front_matter["sdk"] == "gradio" and front_matter["models"] == [str(model.resolve())]

    with demo_server(tmp_path, app=space / "app.py") as url:
        client = Client(url, verbose=False, download_files=False)
        assert_same_probabilities(call(client, handle_file(str(path)), "/classify"), direct.probabilities)
        assert call(client, handle_file(str(path)), "/reason") == [chain.text, chain.label]

        with chromium(tmp_path) as browser:
            wait = WebDriverWait(browser, CALL_SECONDS)
            browser.get(url)
            upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#demo-image input[type=file]"))
            browser.find_element(By.ID, "demo-run").click()  # nothing uploaded yet
            wait.until(lambda b: "No image was given" in b.find_element(By.ID, "demo-status").text)

            upload.send_keys(str(path))
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#demo-image img"))
            browser.find_element(By.ID, "demo-run").click()
            wait.until(lambda b: b.find_element(By.ID, "demo-conclusion").text.strip() == chain.label)
            shown = browser.find_element(By.CSS_SELECTOR, '#demo-direct [data-testid="label-output-value"]').text
            assert shown.strip() == direct.label
            assert browser.find_element(By.ID, "demo-reasoning").text.strip() == "the strokes match seven"
            assert browser.find_element(By.ID, "demo-status").text.strip() == ""
            screenshot = tmp_path / "demo.png"
            assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] >= 1000
