"""The app's detection tab: its handler against `reciprocam explain --task detection` on the
shipped Shapes detector, its one-line errors, and the tab in Debian's chromium (Selenium)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from helpers import GRADIO_QUEUE_WARNINGS
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_app_browser import (
    browser_installed,
    fetch,
    open_browser,
    serve_on_a_free_port,
    shown_images,
    waiting,
)
from test_app_browser import wait_status as browser_status

from reciprocam.app import detection_tab
from reciprocam.app.detection_tab import (
    DetectionSession,
    Detectors,
    boxes_table,
    check_photo,
    explain_request,
    forget,
)
from reciprocam.cli import main
from reciprocam.synthetic.detection import DETECTION_LABELS, ShapesDetection
from reciprocam.synthetic.detector import shapes_detector
from reciprocam.zoo.detectors import SHAPES_DETECTOR, LoadedDetector

CPU = torch.device("cpu")
STEM = "shape0_reciprocam"
pytestmark = GRADIO_QUEUE_WARNINGS
__all__ = ["browser_installed"]  # its check runs before the browser test


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Shapes detection image (3 shapes the detector finds above 0.5)."""
    path = tmp_path_factory.mktemp("detection-photo") / "shape0.png"
    ShapesDetection("test", 1, seed=1).sample(0).image.save(path)
    return path


@pytest.fixture(scope="module")
def library(photo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `reciprocam explain --task detection` writes for the photo."""
    folder = tmp_path_factory.mktemp("detection-cli")
    arguments = ["explain", "--task", "detection", photo, "--output", folder, "--no-progress"]
    assert main([str(a) for a in arguments]) == 0
    return folder


@pytest.fixture(scope="module")
def detectors() -> Detectors:
    return Detectors(CPU)


def pixels(path: str | Path | Image.Image) -> np.ndarray:
    picture = path if isinstance(path, Image.Image) else Image.open(path)
    return np.asarray(picture.convert("RGB"))


def test_the_tab_adds_its_components_and_wires_explain(detectors: Detectors) -> None:
    with gr.Blocks() as app, gr.Tab("Detection"):
        detection_tab.build(CPU)
    ids = {block.elem_id for block in app.blocks.values()}
    assert {
        "det-status", "det-upload", "det-explain", "det-model", "det-boxes", "det-overlays",
        "det-downloads", "det-method", "det-threshold", "det-detections",
    } <= ids  # fmt: skip
    by_id = {block.elem_id: block for block in app.blocks.values() if block.elem_id}
    assert by_id["det-model"].value == SHAPES_DETECTOR
    assert by_id["det-method"].value == "reciprocam"
    assert by_id["det-threshold"].value == 0.5
    [explain] = [
        f for f in app.fns.values() if by_id["det-explain"]._id in [t[0] for t in f.targets]
    ]
    assert [block.elem_id for block in explain.inputs][1:] == [
        "det-upload", "det-model", "det-method", "det-threshold",
    ]  # fmt: skip
    assert [block.elem_id for block in explain.outputs][1:] == [
        "det-detections", "det-overlays", "det-boxes", "det-downloads", "det-status",
    ]  # fmt: skip


def test_explain_shows_the_files_the_command_line_writes(
    detectors: Detectors, photo: Path, library: Path
) -> None:
    state, detections, gallery, table, files, note = explain_request(
        detectors, DetectionSession(), str(photo), SHAPES_DETECTOR, "reciprocam", 0.5
    )
    rows = json.loads((library / f"{STEM}_boxes.json").read_text())
    assert len(rows) == 3
    assert note.startswith(
        f"Request 1: explained 3 box(es) of shape0.png with reciprocam on {SHAPES_DETECTOR} in "
    )
    assert float(note.split(" in ")[-1].removesuffix(" s.")) > 0
    assert state.requests == 1
    assert state.output is not None
    assert np.array_equal(pixels(detections), pixels(library / "shape0_detections.png"))
    assert len(gallery) == len(rows)
    for index, ((picture, caption), row) in enumerate(zip(gallery, rows, strict=True)):
        assert np.array_equal(pixels(picture), pixels(library / f"{STEM}_box{index}.png"))
        assert caption == f"box {index}: {DETECTION_LABELS[row['label']]} {row['score']:.2f}"
    assert {Path(f).name for f in files} == {
        f"{STEM}.npy",
        f"{STEM}_boxes.json",
        *(f"{STEM}_box{i}.png" for i in range(3)),
    }
    by_name = {Path(f).name: Path(f) for f in files}
    maps = np.load(by_name[f"{STEM}.npy"])
    assert maps.shape == (3, 128, 128)
    assert np.array_equal(maps, np.load(library / f"{STEM}.npy"))
    assert json.loads(by_name[f"{STEM}_boxes.json"].read_text()) == rows
    lines = table.splitlines()
    assert lines[0] == "| box | label | score | x1 | y1 | x2 | y2 |"
    assert len(lines) == 2 + len(rows)
    for index, (line, row) in enumerate(zip(lines[2:], rows, strict=True)):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:3] == [str(index), f"{row['name']} ({row['label']})", f"{row['score']:.4f}"]
        assert [float(c) for c in cells[3:]] == pytest.approx(row["box"], abs=0.05)
    # The next request deletes this one's files first.
    again = explain_request(detectors, state, str(photo), SHAPES_DETECTOR, "gradcam", 0.85)
    assert not state.output.exists()
    assert again[0].requests == 2
    assert "explained 2 box(es) of shape0.png with gradcam" in again[-1]
    assert [caption for _, caption in again[2]] == ["box 0: cross 0.91", "box 1: cross 0.89"]
    forget(again[0])
    assert again[0].output is not None
    assert not again[0].output.exists()


def test_errors_give_one_line_and_the_tab_keeps_working(
    detectors: Detectors, photo: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo\n")
    assert check_photo(str(text)) == "notes.txt: not an image file (Pillow cannot identify it)"
    assert check_photo(str(photo)) == "shape0.png: 128 x 128 pixels; click Explain."
    state = DetectionSession()
    cleared = [None, [], "", None]
    expected = [
        (str(text), SHAPES_DETECTOR, 0.5,
         "Request 1: shapes_detector: notes.txt: not an image file (Pillow cannot identify it)"),
        (str(photo), SHAPES_DETECTOR, 0.95,
         "Request 2: shapes_detector: no detection scores >= 0.95 on this image (the best scores"
         " 0.907); lower the threshold"),
        (str(photo), "no_such_model", 0.5,
         "Request 3: no_such_model: unknown detector 'no_such_model' (torchvision"
         " detection models)"),
        (str(photo), "fcos_resnet50_fpm", 0.5,
         "Request 4: fcos_resnet50_fpm: unknown detector 'fcos_resnet50_fpm'; did you mean"
         " fcos_resnet50_fpn, fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn? (torchvision"
         " detection models)"),
    ]  # fmt: skip
    for path, name, threshold, message in expected:
        state, *shown, note = explain_request(detectors, state, path, name, "reciprocam", threshold)
        assert note == message
        assert "\n" not in note
        assert shown == cleared
        assert state.output is None
    assert explain_request(detectors, state, None, SHAPES_DETECTOR, "reciprocam", 0.5)[-1] == (
        "Upload a photo first."
    )
    state, *_, note = explain_request(detectors, state, str(photo), "", "reciprocam", 0.5)
    assert note.startswith("Request 5: explained 3 box(es)")
    forget(state)


def test_detectors_are_loaded_once_per_name_with_their_pretrained_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str | None]] = []

    def fake_load(name: str, *, weights: str | None = None) -> LoadedDetector:
        asked.append((name, weights))
        return LoadedDetector(name, shapes_detector(), DETECTION_LABELS, True)

    monkeypatch.setattr(detection_tab, "load_detector", fake_load)
    detectors = Detectors(CPU, kept=2)
    shapes = detectors[SHAPES_DETECTOR]
    assert detectors[""] is shapes
    fcos = detectors["fcos_resnet50_fpn"]
    assert detectors["fcos_resnet50_fpn"] is fcos
    detectors["retinanet_resnet50_fpn"]
    detectors["ssd300_vgg16"]  # drops fcos, the one chosen longest ago
    assert detectors[SHAPES_DETECTOR] is shapes
    assert detectors["fcos_resnet50_fpn"] is not fcos
    assert asked == [
        (SHAPES_DETECTOR, None),
        ("fcos_resnet50_fpn", "DEFAULT"),
        ("retinanet_resnet50_fpn", "DEFAULT"),
        ("ssd300_vgg16", "DEFAULT"),
        ("fcos_resnet50_fpn", "DEFAULT"),
    ]


def test_boxes_table_leaves_a_given_boxs_score_empty() -> None:
    rows = ({"label": 2, "name": "square", "score": None, "box": [1.0, 2.0, 30.25, 40.0]},)
    assert boxes_table(rows).splitlines()[2] == "| 0 | square (2) |  | 1.0 | 2.0 | 30.2 | 40.0 |"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with gr.Blocks(analytics_enabled=False) as app, gr.Tab("Detection"):
        detection_tab.build(CPU)
    yield serve_on_a_free_port(app)
    app.close()


@pytest.fixture
def driver(url: str) -> Iterator[WebDriver]:
    opened = open_browser(url, "det-explain")
    yield opened
    opened.quit()


def wait_status(driver: WebDriver, text: str) -> str:
    return browser_status(driver, text, "det-status")


def test_the_tab_in_a_browser_shows_the_librarys_overlays_and_boxes(
    driver: WebDriver, photo: Path, library: Path
) -> None:
    field = waiting(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#det-upload input[type=file]")
    )[0]
    field.send_keys(str(photo))
    wait_status(driver, "shape0.png: 128 x 128 pixels")
    driver.find_element(By.ID, "det-explain").click()
    note = wait_status(driver, "Request 1:")
    assert "explained 3 box(es) of shape0.png with reciprocam on shapes_detector in" in note
    rows = json.loads((library / f"{STEM}_boxes.json").read_text())
    shown = shown_images(driver, "det-overlays")
    assert len(shown) == len(rows)
    assert np.array_equal(pixels(shown[1]), pixels(library / f"{STEM}_box1.png"))
    [picture] = shown_images(driver, "det-detections")
    assert np.array_equal(pixels(picture), pixels(library / "shape0_detections.png"))
    table = [
        [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, "#det-boxes tr")
    ]
    table = [cells for cells in table if cells]
    assert len(table) == len(rows)
    for index, (cells, row) in enumerate(zip(table, rows, strict=True)):
        assert cells[:3] == [str(index), f"{row['name']} ({row['label']})", f"{row['score']:.4f}"]
        assert [float(c) for c in cells[3:]] == pytest.approx(row["box"], abs=0.05)
    links = {
        str(a.get_attribute("download")): str(a.get_attribute("href"))
        for a in driver.find_elements(By.CSS_SELECTOR, "#det-downloads a[download]")
    }
    assert set(links) == {
        f"{STEM}.npy",
        f"{STEM}_boxes.json",
        *(f"{STEM}_box{i}.png" for i in range(3)),
    }
    assert fetch(links[f"{STEM}_box1.png"]) == (library / f"{STEM}_box1.png").read_bytes()
