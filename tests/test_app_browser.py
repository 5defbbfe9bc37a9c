"""`reciprocam app` in a real browser: Debian's chromium driven by Selenium, on the Shapes CNN.

The page is served in this process (`serve`), so psutil reads the server's memory here.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import psutil
import pytest
import torch
from helpers import GRADIO_QUEUE_WARNINGS, shapes_page_model
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from reciprocam.app import build_app
from reciprocam.app.explore import MethodResult
from reciprocam.app.pictures import grid_picture
from reciprocam.app.serve import serve
from reciprocam.metrics import Deletion, Insertion
from reciprocam.photos import ExplainedPhoto, explain_photos
from reciprocam.registry import explainer
from reciprocam.synthetic.shapes import CLASSES, SIZE, render
from reciprocam.zoo import LoadedModel

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30  # seconds an answer may take on a busy 2-core machine


def waiting(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """A wait of up to WAIT seconds that looks again when the page has re-rendered what it
    read (Gradio replaces elements as it updates them)."""
    return WebDriverWait(
        driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )


pytestmark = GRADIO_QUEUE_WARNINGS


@pytest.fixture(scope="module", autouse=True)
def browser_installed() -> None:
    """The browser tests need a real browser: .ci/run installs it; say how where it is not."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: apt-get install chromium chromium-driver", False
        )


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return shapes_page_model("cnn")


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    return shapes_page_model("vit")


@pytest.fixture(scope="module")
def url(loaded: LoadedModel, vit: LoadedModel) -> Iterator[str]:
    app = build_app(loaded, others=[vit])
    yield serve_on_a_free_port(app)
    app.close()


@pytest.fixture
def open_page(url: str) -> Iterator[Callable[[], WebDriver]]:
    """Open the page in a fresh headless chromium (a browser session of its own)."""
    drivers: list[WebDriver] = []

    def start() -> WebDriver:
        drivers.append(open_browser(url, "explain"))
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.quit()


def shapes_photo(folder: Path, index: int, side: int = SIZE) -> tuple[Path, int]:
    """Shapes image `index` of stream 0, enlarged to `side` pixels, as a PNG; and its class."""
    sample = render(0, index)
    path = folder / f"shape{index}_{side}.png"
    sample.image.resize((side, side), Image.Resampling.NEAREST).save(path)
    return path, sample.label


def serve_on_a_free_port(app: gr.Blocks) -> str:
    """Serve `app` on a free local port; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return serve(app, "127.0.0.1", port)


def open_browser(url: str, ready: str) -> WebDriver:
    """A headless chromium (a browser session of its own) on `url`, once element `ready` is
    there; it logs the requests the page makes."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1900")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(url)
        waiting(driver).until(lambda d: d.find_elements(By.ID, ready))
    except BaseException:
        driver.quit()
        raise
    return driver


def status(driver: WebDriver, element: str = "status") -> str:
    """The text of Markdown `element`, without the progress note Gradio lays over it while a
    request runs ("processing | 0.1s")."""
    shown = driver.find_element(By.CSS_SELECTOR, f"#{element} [data-testid=markdown]")
    return str(shown.text)


def wait_status(driver: WebDriver, text: str, element: str = "status") -> str:
    """The status line `element` once it says `text`."""

    def said(d: WebDriver) -> str | None:
        shown = status(d, element)
        return shown if text in shown else None

    return str(waiting(driver).until(said))


def upload(driver: WebDriver, path: Path) -> None:
    """Put `path` in the photo box, clearing the one it holds first."""
    for clear in driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
        clear.click()
    field = waiting(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]")
    )[0]
    field.send_keys(str(path))


def explain(driver: WebDriver, request: int) -> str:
    driver.find_element(By.ID, "explain").click()
    return wait_status(driver, f"Request {request}:")


def complete(driver: WebDriver, box: str, text: str) -> list[str]:
    """Type `text` into dropdown `box`, pick the first completion offered, and return the
    completions."""
    field = driver.find_element(By.CSS_SELECTOR, f"#{box} input")
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text)
    offered = waiting(driver).until(
        lambda d: [o.text for o in d.find_elements(By.CSS_SELECTOR, f"#{box} ul li")]
    )
    field.send_keys(Keys.ENTER)
    return offered


def shown_images(driver: WebDriver, gallery: str) -> list[Image.Image]:
    """The pictures a gallery shows, read from the URLs the page loads them from."""
    sources = [
        img.get_attribute("src") for img in driver.find_elements(By.CSS_SELECTOR, f"#{gallery} img")
    ]
    return [Image.open(io.BytesIO(fetch(source))) for source in dict.fromkeys(sources)]


def fetch(address: str | None) -> bytes:
    assert address is not None
    assert address.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(address, timeout=WAIT) as response:
        content: bytes = response.read()
    return content


def download_links(driver: WebDriver) -> dict[str, str]:
    links = driver.find_elements(By.CSS_SELECTOR, "#downloads a[download]")
    return {str(a.get_attribute("download")): str(a.get_attribute("href")) for a in links}


def summary_row(driver: WebDriver, method: str) -> list[str]:
    """The cells of the summary table's row of `method`."""
    for row in driver.find_elements(By.CSS_SELECTOR, "#summary tr"):
        cells = [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")]
        if cells and cells[0] == method:
            return cells
    raise AssertionError(f"no row of {method} in the summary")


def library_result(
    loaded: LoadedModel, path: Path, index: int, folder: Path
) -> tuple[ExplainedPhoto, torch.Tensor]:
    """What `reciprocam explain` makes of the photo with reciprocam for class `index`, and the
    map at the layer's grid."""
    with explainer("reciprocam", loaded.model) as method:
        [photo] = explain_photos(
            [path],
            method,
            folder,
            preprocessing=loaded.preprocessing,
            categories=loaded.categories,
            method="reciprocam",
            device=torch.device("cpu"),
            target=index,
        )
    assert isinstance(photo, ExplainedPhoto)
    x = loaded.preprocessing(photo.photo)[0][None]
    with explainer("reciprocam", loaded.model, upsample=False) as method:
        grid = method.explain(x, index).maps[0]
    return photo, grid


def test_an_explanation_shows_the_librarys_own_overlay_grid_values_and_files(
    open_page: Callable[[], WebDriver], loaded: LoadedModel, tmp_path: Path
) -> None:
    path, label = shapes_photo(tmp_path, 1)
    driver = open_page()
    upload(driver, path)
    wait_status(driver, f"{path.name}: the model sees {CLASSES[label]}")
    buttons = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "[id^=top-]") if b.text]
    assert buttons[0].startswith(CLASSES[label])
    assert len(buttons) == len(CLASSES)
    other = next(i for i in range(len(CLASSES)) if i != label)
    assert complete(driver, "class", CLASSES[other][:3]) == [f"{CLASSES[other]} ({other})"]
    note = explain(driver, 1)
    assert f"explained {CLASSES[other]} with 1 method(s)" in note

    photo, grid = library_result(loaded, path, other, tmp_path / "library")
    [ours] = photo.maps
    [shown] = shown_images(driver, "overlays")
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(ours.overlay))
    [raw] = shown_images(driver, "grids")
    assert np.array_equal(np.asarray(raw.convert("RGB")), np.asarray(grid_picture(grid)))
    assert raw.size == (256, 256)  # the 8x8 grid of layer3, 32 pixels a cell

    _, name, probability, _, deletion, insertion = summary_row(driver, "reciprocam")
    assert name == f"{CLASSES[other]} ({other})"
    assert float(probability) == pytest.approx(ours.target.probability, abs=1e-4)
    x = loaded.preprocessing(photo.photo)[0][None]
    for metric, shown_auc in (
        (Deletion(loaded.model), deletion),
        (Insertion(loaded.model), insertion),
    ):
        [auc] = metric.update(x, ours.saliency[None], other)
        assert float(shown_auc) == pytest.approx(float(auc), abs=1e-4)
    assert driver.find_elements(By.CSS_SELECTOR, "#curves img, #curves svg, #curves canvas")

    links = download_links(driver)
    stem = f"{path.stem}_reciprocam"
    assert {f"{stem}.npy", f"{stem}.png"} <= set(links)
    saved = np.load(io.BytesIO(fetch(links[f"{stem}.npy"])))
    assert np.array_equal(saved, np.load(ours.map_path))
    assert fetch(links[f"{stem}.png"]) == ours.overlay_path.read_bytes()
    requested = [
        json.loads(entry["message"])["message"].get("params", {}).get("request", {}).get("url", "")
        for entry in driver.get_log("performance")
    ]
    away = [u for u in requested if u and not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert away == []  # nothing is fetched from the internet


def test_another_model_is_chosen_on_the_page_and_explained_as_the_library_does(
    open_page: Callable[[], WebDriver], vit: LoadedModel, tmp_path: Path
) -> None:
    path, _ = shapes_photo(tmp_path, 4)
    driver = open_page()
    upload(driver, path)
    wait_status(driver, "the model sees")
    assert complete(driver, "model", "shapes_v") == ["shapes_vit"]
    waiting(driver).until(lambda d: "shapes_vit" in d.find_element(By.TAG_NAME, "h2").text)
    wait_status(driver, f"{path.name}: the model sees")
    # The ViT's layers now: its blocks' token grids.
    offered = complete(driver, "layer", "encoder.layers.encoder_layer_3.ln_1")
    assert offered == ["encoder.layers.encoder_layer_3.ln_1 (8x8)"]
    complete(driver, "layer", "automatic")
    assert "explained" in explain(driver, 1)
    with torch.no_grad():
        x = vit.preprocessing(Image.open(path).convert("RGB"))[0][None]
        predicted = int(vit.model(x).argmax())
    photo, _ = library_result(vit, path, predicted, tmp_path / "library")
    [shown] = shown_images(driver, "overlays")
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(photo.maps[0].overlay))
    assert summary_row(driver, "vit-reciprocam")[1] == f"{CLASSES[predicted]} ({predicted})"
    # A name that cannot load: one line, and the page keeps its model.
    field = driver.find_element(By.CSS_SELECTOR, "#model input")
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("no_such_model", Keys.ENTER)
    message = wait_status(driver, "no_such_model: unknown model 'no_such_model'")
    assert "\n" not in message
    assert "reciprocam app: shapes_vit" in driver.find_element(By.TAG_NAME, "h2").text


def test_several_methods_side_by_side_and_a_chosen_layer(
    open_page: Callable[[], WebDriver], tmp_path: Path
) -> None:
    path, label = shapes_photo(tmp_path, 2)
    driver = open_page()
    upload(driver, path)
    wait_status(driver, "the model sees")
    driver.find_element(By.XPATH, "//*[@id='methods']//label[normalize-space()='gradcam']").click()
    assert complete(driver, "layer", "layer2 (") == ["layer2 (16x16)"]
    note = explain(driver, 1)
    assert "with 2 method(s)" in note
    assert [summary_row(driver, m)[1] for m in ("reciprocam", "gradcam")] == [
        f"{CLASSES[label]} ({label})"
    ] * 2
    grids = shown_images(driver, "grids")
    assert [g.size for g in grids] == [(256, 256)] * 2  # 16x16 cells of 16 pixels
    assert all(len(np.unique(np.asarray(g)[::16, ::16].reshape(-1, 3), axis=0)) > 1 for g in grids)
    # A layer that ReciproCAM cannot mask: its one-line error, and Grad-CAM's map.
    assert complete(driver, "layer", "layer3.conv1 (") == ["layer3.conv1 (8x8)"]
    note = explain(driver, 2)
    assert "with 1 method(s)" in note
    assert "Failed: reciprocam: layer 'layer3.conv1' is bypassed" in note
    assert [g.size for g in shown_images(driver, "grids")] == [(256, 256)]


def test_bad_uploads_show_one_line_and_the_page_keeps_working(
    open_page: Callable[[], WebDriver], tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    good, label = shapes_photo(tmp_path, 3)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    driver = open_page()
    upload(driver, text)
    message = wait_status(driver, "notes.txt: not an image file")
    assert "\n" not in message
    assert "/tmp" not in message
    driver.find_element(By.ID, "explain").click()
    wait_status(driver, "Upload a photo or pick a demo photo first.")
    upload(driver, truncated)
    message = wait_status(driver, "truncated.png: cannot decode the image")
    assert "\n" not in message
    upload(driver, good)
    wait_status(driver, f"the model sees {CLASSES[label]}")
    assert f"explained {CLASSES[label]}" in explain(driver, 1)


def test_twenty_requests_leave_the_servers_memory_flat(
    open_page: Callable[[], WebDriver], tmp_path: Path
) -> None:
    # A 1024-pixel photo: each request makes an 800x800 overlay (1.9 MB) and its PNG, so
    # requests that kept their results would hold one more result, picture and tensors each:
    # the live objects say so exactly. The process's footprint steps up and down by 25-50 MB
    # between requests (the allocator's arenas, Gradio's threads), even with freed memory
    # handed back, so its bound compares the floors (what a leak raises, where a passing
    # peak does not) and only catches a leak far larger than a request's results.
    path, label = shapes_photo(tmp_path, 4, side=1024)
    driver = open_page()
    upload(driver, path)
    wait_status(driver, "the model sees")
    footprints = []
    for request in range(1, 21):
        explain(driver, request)
        footprints.append(footprint())
        if request == 10:  # after the warm-up: caches, allocator pools, the first explainers
            warm = live_objects()
    results, pictures, tensors = live_objects()
    assert results == warm[0]  # one request's results at a time
    # Fewer new pictures and tensors than the 10 requests since: none is kept per request.
    assert pictures - warm[1] < 10
    assert tensors - warm[2] < 10
    growth = min(footprints[15:]) - min(footprints[5:10])
    assert growth < 64 * 2**20, f"the server grew {growth / 2**20:.1f} MB in 10 requests"
    [shown] = shown_images(driver, "overlays")
    assert shown.size == (800, 800)
    assert summary_row(driver, "reciprocam")[1] == f"{CLASSES[label]} ({label})"


def footprint() -> int:
    """This process's resident memory, once the garbage is collected and the C allocator has
    handed its free pages back (glibc's malloc_trim, where there is one)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the footprint as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


def live_objects() -> tuple[int, int, int]:
    """How many explanation results, PIL images and tensors this process holds."""
    gc.collect()
    found = gc.get_objects()
    return tuple(
        sum(issubclass(type(o), kind) for o in found)
        for kind in (MethodResult, Image.Image, torch.Tensor)
    )  # type: ignore[return-value]


def test_two_browser_sessions_keep_their_own_photos_and_results(
    open_page: Callable[[], WebDriver], loaded: LoadedModel, tmp_path: Path
) -> None:
    (first, first_label), (second, _) = shapes_photo(tmp_path, 5), shapes_photo(tmp_path, 6)
    x = loaded.preprocessing(Image.open(second).convert("RGB"))[0][None]
    with torch.no_grad():
        second_class = int(loaded.model(x)[0].argsort(descending=True)[1])
    one, two = open_page(), open_page()
    upload(one, first)
    wait_status(one, f"{first.name}: the model sees")
    upload(two, second)
    wait_status(two, f"{second.name}: the model sees")
    two.find_element(By.ID, "top-1").click()  # its second most probable class
    explain(one, 1)
    explain(two, 1)
    explain(one, 2)  # after the other session's request: still its own photo and class
    for driver, path, index, requests in (
        (one, first, first_label, 2),
        (two, second, second_class, 1),
    ):
        assert summary_row(driver, "reciprocam")[1] == f"{CLASSES[index]} ({index})"
        photo, _ = library_result(loaded, path, index, tmp_path / path.stem)
        [shown] = shown_images(driver, "overlays")
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(photo.maps[0].overlay))
        assert status(driver).startswith(f"Request {requests}:")
