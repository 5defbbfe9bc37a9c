"""The app's videos-and-volumes tab: its handlers make the maps, animations and montages of
`reciprocam explain FILE --model NAME`, say each mistake in one line and keep working; and in a
real browser, a volume's montage is the library's, pixel for pixel."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from helpers import GRADIO_QUEUE_WARNINGS, forwards_under_the_lock
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_app_browser import browser_installed as browser_installed  # its check, here too
from test_app_browser import complete, fetch, open_browser, serve_on_a_free_port
from test_app_browser import wait_status as browser_status
from test_clips import write_video

from reciprocam import ReciproCAM
from reciprocam.app import clip_tab
from reciprocam.app.clip_tab import METHODS, MODELS, TOP, ClipSession, ClipTab, build, forget
from reciprocam.clip_inputs import ClipInput, read_clip_input
from reciprocam.clips import montage, read_video
from reciprocam.registry import explainer
from reciprocam.synthetic.shapes import CLASSES
from reciprocam.synthetic.video_models import shapes_video_model, shapes_volume_model
from reciprocam.synthetic.volume import CLASSES_3D, render_volume, volume_to_tensor
from reciprocam.zoo.video import LoadedClipModel, load_video_model

CPU = torch.device("cpu")
pytestmark = GRADIO_QUEUE_WARNINGS


@pytest.fixture(scope="module")
def tab() -> ClipTab:
    return ClipTab(CPU)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 4:3 video, a 5-frame one, a Shapes volume, a 3-channel and a 2-D array, a
    photo and a text file named .mp4."""
    folder = tmp_path_factory.mktemp("clip-tab")
    rng = np.random.default_rng(0)
    write_video(folder / "walk.mkv", rng.integers(0, 256, (40, 48, 64, 3), dtype=np.uint8))
    write_video(folder / "short.mkv", rng.integers(0, 256, (5, 48, 64, 3), dtype=np.uint8))
    np.save(folder / "shape.npy", render_volume(0, 1).volume)
    np.save(folder / "rgb.npy", rng.random((3, 8, 16, 16)).astype(np.float32))
    np.save(folder / "flat.npy", rng.random((32, 32)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "photo.png")
    (folder / "notes.mp4").write_text("not a video")
    return folder


def shown(updates: list[dict[str, object]]) -> list[str]:
    """The texts of the top-class buttons made visible."""
    return [str(u["value"]) for u in updates if u.get("visible")]


def test_the_tab_offers_the_video_models_and_the_cnn_methods() -> None:
    assert MODELS[:2] == ("shapes_video", "shapes_volume")
    assert {"r3d_18", "s3d", "swin3d_t"} <= set(MODELS)
    assert "vit-reciprocam" not in METHODS
    assert {"reciprocam", "gradcam", "scorecam", "rise"} <= set(METHODS)


def test_a_video_gets_the_librarys_map_and_a_gif_of_its_clip(tab: ClipTab, files: Path) -> None:
    path = files / "walk.mkv"
    state, note, classes, *buttons = tab.choose(str(path), ClipSession())
    # The library's clip: 16 of the 40 frames, the middle of each 2.5, resized to 64 rows.
    loaded = load_video_model("shapes_video")
    frames, _ = read_video(path)
    clip = frames[np.floor((np.arange(16) + 0.5) * 2.5).astype(int)]
    tensors = [loaded.preprocessing(Image.fromarray(frame))[0] for frame in clip]
    x = torch.stack(tensors, dim=1)[None]
    with torch.no_grad():
        probabilities = shapes_video_model()(x).softmax(dim=1)[0]
    ranked = probabilities.argsort(descending=True).tolist()
    assert [p.index for p in state.top] == ranked
    assert shown(buttons) == [f"{CLASSES[i]} ({probabilities[i]:.0%})" for i in ranked]
    assert note == f"walk.mkv: shapes_video sees {CLASSES[ranked[0]]} ({probabilities.max():.0%})."
    assert classes["value"] == ranked[0]
    assert classes["choices"] == [(f"{name} ({i})", i) for i, name in enumerate(CLASSES)]

    chosen = ranked[1]  # the second most probable class, as its button picks it
    state, picture, summary, downloads, status = tab.explain(state, "reciprocam", chosen)
    explanation = ReciproCAM(shapes_video_model()).explain(x, chosen)
    saved = np.load(state.output / "walk_reciprocam.npy")
    assert saved.shape == (16, 64, 64)
    assert saved.dtype == np.float32
    np.testing.assert_allclose(saved, explanation.maps[0].numpy(), atol=1e-6)
    assert picture == str(state.output / "walk_reciprocam.gif")
    assert downloads == [str(state.output / "walk_reciprocam.npy"), picture]
    with Image.open(picture) as animation:
        assert animation.n_frames == 16
        assert animation.size == (48, 48)  # the model's crop at the video's 48 rows
        assert animation.info["duration"] == round(1000 / (10 * 16 / 40))  # the video's length
    assert status.startswith(f"Request 1: explained {CLASSES[chosen]} with reciprocam in ")
    assert "\n" not in status
    target = float(explanation.target_probabilities[0][0])
    assert f"**{CLASSES[chosen]}** ({chosen}, {target:.1%}) explained with reciprocam" in summary
    assert f"| 1 | {CLASSES[ranked[0]]} ({ranked[0]}) | {probabilities.max():.4f} |" in summary
    assert state.result is not None
    assert state.result.layer == "layer3"
    assert state.result.target.probability == pytest.approx(target, abs=1e-6)
    forget(state)


def test_requests_run_the_model_under_its_lock(tab: ClipTab, files: Path) -> None:
    model = tab.models["shapes_volume"]
    path = files / "shape.npy"
    assert forwards_under_the_lock(model.loaded.model, lambda: model.predict(path)) == [True]


def test_a_file_is_read_once_when_chosen_not_at_each_request(
    tab: ClipTab, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[Path] = []

    def counted(path: Path, loaded: LoadedClipModel) -> ClipInput:
        read.append(path)
        return read_clip_input(path, loaded)

    monkeypatch.setattr(clip_tab, "read_clip_input", counted)
    path = files / "shape.npy"
    _, state, *_ = tab.switch("shapes_volume", ClipSession())
    state, *_ = tab.choose(str(path), state)
    for method in ("reciprocam", "gradcam"):
        state, *_, status = tab.explain(state, method, None)
        assert status.startswith("Request")
        assert "explained" in status
    assert read == [path]
    forget(state)


def test_a_volume_gets_the_librarys_map_and_montage_and_old_files_go(
    tab: ClipTab, files: Path
) -> None:
    volume = np.load(files / "shape.npy")
    label = render_volume(0, 1).label
    _, state, note, classes, *_ = tab.switch("shapes_volume", ClipSession())
    assert note == "Now explaining with shapes_volume: upload a video or a volume."
    assert classes["choices"] == [(f"{name} ({i})", i) for i, name in enumerate(CLASSES_3D)]
    state, note, classes, *buttons = tab.choose(str(files / "shape.npy"), state)
    assert note.startswith(f"shape.npy: shapes_volume sees {CLASSES_3D[label]} (")
    assert len(shown(buttons)) == len(CLASSES_3D) <= TOP

    state, picture, _, downloads, status = tab.explain(state, "gradcam", None)  # the top class
    with explainer("gradcam", shapes_volume_model()) as method:
        expected = method.explain(volume_to_tensor(volume)[None], label).maps[0]
    saved = np.load(state.output / "shape_gradcam.npy")
    assert saved.shape == (32, 32, 32)
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-6)
    assert picture == str(state.output / "shape_gradcam.png")
    with Image.open(picture) as written:
        assert written.size == (6 * 128, 6 * 128)  # 32 slices, six a row
        assert np.array_equal(np.asarray(written), np.asarray(montage(volume, expected)))
    assert status.startswith(f"Request 1: explained {CLASSES_3D[label]} with gradcam in ")

    first = state.output
    state, _, _, downloads, status = tab.explain(state, "reciprocam", label)
    assert status.startswith("Request 2: explained")
    assert not first.exists()  # the last request's files are deleted on the next
    assert [Path(p).name for p in downloads] == ["shape_reciprocam.npy", "shape_reciprocam.png"]
    forget(state)  # as when the session closes
    assert not state.output.exists()


@pytest.mark.parametrize(
    ("model", "name", "message"),
    [
        ("shapes_video", "notes.mp4", "notes.mp4: not a readable video (Invalid data found"),
        ("shapes_video", "short.mkv", "short.mkv has 5 frames; shapes_video needs at least 16"),
        (
            "shapes_video",
            "photo.png",
            "photo.png: not a video (.avi, .m4v, .mkv, .mov, .mp4, .mpeg, .mpg, .webm) or a"
            " volume (.npy, .nii, .nii.gz)",
        ),
        (
            "shapes_volume",
            "rgb.npy",
            "rgb.npy: a volume of shape (3, 8, 16, 16) has 3 channels; shapes_volume takes"
            " 1-channel volumes, (D, H, W)",
        ),
        ("shapes_volume", "flat.npy", "flat.npy: a volume of shape (32, 32); give one of shape"),
        ("shapes_volume", "walk.mkv", "walk.mkv: shapes_volume takes 1-channel volumes"),
        ("shapes_video", "shape.npy", "shape.npy: a volume of shape (32, 32, 32) has 1 channel;"),
    ],
)
def test_a_file_that_does_not_fit_is_one_line_and_the_tab_keeps_working(
    tab: ClipTab, files: Path, model: str, name: str, message: str
) -> None:
    fits = "walk.mkv" if model == "shapes_video" else "shape.npy"
    _, state, *_ = tab.switch(model, ClipSession())
    state, good, *_ = tab.choose(str(files / fits), state)
    assert good.startswith(f"{fits}: {model} sees ")
    state, note, classes, *buttons = tab.choose(str(files / name), state)
    assert note.startswith(message)
    assert "\n" not in note
    assert str(files) not in note  # the upload's name, not its temporary path
    assert state.path is None  # the file before it is no longer the one explained
    assert classes["value"] is None
    assert shown(buttons) == []
    _, _, _, _, status = tab.explain(state, "reciprocam", None)
    assert status == "Upload a video or a volume first."
    state, good, *_ = tab.choose(str(files / fits), state)  # the tab keeps working
    assert good.startswith(f"{fits}: {model} sees ")


def test_a_model_that_cannot_load_is_one_line_and_the_session_keeps_its_own(
    tab: ClipTab, files: Path
) -> None:
    state, *_ = tab.choose(str(files / "walk.mkv"), ClipSession())
    kept, same, message, *unchanged = tab.switch("no_such_model", state)
    assert message.startswith("unknown video model 'no_such_model'")
    assert "\n" not in message
    assert kept["value"] == "shapes_video"
    assert same == state
    assert all(u == {"__type__": "update"} for u in unchanged)
    # A class the model does not have: one line after the request's number, no stale results.
    state, picture, summary, downloads, status = tab.explain(state, "reciprocam", 99)
    assert status == "Request 1: class 99 is out of range: the model has 4 classes (0 to 3)"
    assert (picture, summary, downloads) == (None, "", [])
    state, picture, summary, downloads, status = tab.explain(state, "cam", 2)
    assert status.startswith(f"Request 2: explained {CLASSES[2]} with cam in ")
    assert [Path(p).name for p in downloads] == ["walk_cam.npy", "walk_cam.gif"]
    forget(state)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """The tab alone on a page, served here; the folders of its sessions' last results go
    with it (a session's own go when Gradio drops the closed session, later)."""
    before = set(Path(tempfile.gettempdir()).glob("reciprocam-app-clip-*"))
    with gr.Blocks(analytics_enabled=False) as app, gr.Tab("Videos and volumes"):
        build(CPU)
    yield serve_on_a_free_port(app)
    app.close()
    for folder in set(Path(tempfile.gettempdir()).glob("reciprocam-app-clip-*")) - before:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def driver(url: str) -> Iterator[WebDriver]:
    opened = open_browser(url, "clip-explain")
    yield opened
    opened.quit()


def wait_status(driver: WebDriver, text: str) -> str:
    return browser_status(driver, text, "clip-status")


def test_a_volume_explained_in_the_browser_shows_the_librarys_montage(
    driver: WebDriver, files: Path
) -> None:
    assert complete(driver, "clip-model", "shapes_vol") == ["shapes_volume"]
    wait_status(driver, "Now explaining with shapes_volume")
    driver.find_element(By.CSS_SELECTOR, "#clip-upload input[type=file]").send_keys(
        str(files / "shape.npy")
    )
    label = render_volume(0, 1).label
    wait_status(driver, f"shape.npy: shapes_volume sees {CLASSES_3D[label]}")
    driver.find_element(By.ID, "clip-explain").click()
    note = wait_status(driver, "Request 1:")
    assert note.startswith(f"Request 1: explained {CLASSES_3D[label]} with reciprocam in ")

    volume = np.load(files / "shape.npy")
    explanation = ReciproCAM(shapes_volume_model()).explain(volume_to_tensor(volume)[None])
    expected = explanation.maps[0]
    [source] = {
        img.get_attribute("src")
        for img in driver.find_elements(By.CSS_SELECTOR, "#clip-picture img")
    }
    with Image.open(io.BytesIO(fetch(source))) as picture:
        assert picture.size == (6 * 128, 6 * 128)
        assert np.array_equal(
            np.asarray(picture.convert("RGB")), np.asarray(montage(volume, expected))
        )
    links = {
        str(a.get_attribute("download")): str(a.get_attribute("href"))
        for a in driver.find_elements(By.CSS_SELECTOR, "#clip-downloads a[download]")
    }
    assert set(links) == {"shape_reciprocam.npy", "shape_reciprocam.png"}
    saved = np.load(io.BytesIO(fetch(links["shape_reciprocam.npy"])))
    np.testing.assert_allclose(saved, expected.numpy(), atol=1e-6)
    rows = [
        [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, "#clip-result tr")
    ]
    probabilities = explanation.probabilities[0]
    ranked = probabilities.argsort(descending=True).tolist()
    assert [r for r in rows if r] == [
        [str(rank), f"{CLASSES_3D[i]} ({i})", f"{probabilities[i]:.4f}"]
        for rank, i in enumerate(ranked, 1)
    ]
    assert ranked[0] == label
