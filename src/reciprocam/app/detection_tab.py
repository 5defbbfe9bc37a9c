"""The page's detection tab: pick a detector, upload a photo, choose a method and a score
threshold; see the photo with the explained boxes, one overlay per box, a table of the boxes,
and download the files `reciprocam explain --task detection` writes.

The files are the command line's own (`reciprocam.detection.files`, into a folder of the
session's that is deleted on its next request and when it closes)."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch
import torchvision.transforms.functional as TF

from .._model import model_lock
from ..detection.files import DetectionFiles, write_detection_files
from ..errors import NoDetectionError, ReciproCAMError
from ..images import load_image
from ..registry import detection_explainer, detection_methods
from ..zoo.detectors import SHAPES_DETECTOR, LoadedDetector, detector_names, load_detector
from .loaded import LoadedOnce
from .sessions import forget, one_line

DEFAULT_METHOD = "reciprocam"
DEFAULT_THRESHOLD = 0.5
COLORMAP, ALPHA = "jet", 0.5  # the command line's defaults (--colormap, --alpha)
READY = "Upload a photo (for shapes_detector: a Shapes detection image) and click Explain."


@dataclass(frozen=True)
class DetectionSession:
    """One browser session's latest results folder and how many requests it made."""

    output: Path | None = None
    requests: int = 0


@dataclass(frozen=True)
class DetectionResult:
    """One photo explained as `reciprocam explain --task detection` writes it."""

    files: DetectionFiles  # the files it wrote, each box's caption, the boxes file's rows
    seconds: float  # the explanation's time (not the files')


class Detectors(LoadedOnce[str, LoadedDetector]):
    """The detectors the tab offers, each loaded on `device` when first chosen (torchvision's
    with their pretrained weights, downloaded); the Shapes detector stays loaded, and at most
    `kept` others (the one chosen longest ago is dropped first). Requests use a detector one
    at a time, under its `model_lock`."""

    def __init__(self, device: torch.device, kept: int = 2) -> None:
        def load(name: str) -> LoadedDetector:
            shapes = name == SHAPES_DETECTOR
            loaded = load_detector(name, weights=None if shapes else "DEFAULT")
            loaded.model.to(device)
            return loaded

        super().__init__(load, kept=kept, permanent={SHAPES_DETECTOR: None})
        self.device = device

    def __getitem__(self, name: str) -> LoadedDetector:
        """Detector `name` ("": the Shapes detector); a ModelError if it cannot load."""
        return super().__getitem__(name.strip() or SHAPES_DETECTOR)

    def explain(
        self, path: Path, name: str, method: str, threshold: float, output: Path
    ) -> DetectionResult:
        """Explain the detections of the photo at `path` scoring >= `threshold` with `method`,
        writing into `output` what `reciprocam explain --task detection` writes; a
        ReciproCAMError (ImageError, ModelError, OptionError, TargetError) if it cannot."""
        image = load_image(path)
        detector = self[name]
        explainer = detection_explainer(method, detector.model, threshold=threshold, progress=False)
        x = TF.to_tensor(image).to(self.device)
        with model_lock(detector.model):  # the time leaves out waiting for another request
            start = time.perf_counter()
            explanation = explainer.explain(x)
            seconds = time.perf_counter() - start
        files = write_detection_files(
            path,
            image,
            explanation,
            output,
            method,
            detector.categories,
            colormap=COLORMAP,
            alpha=ALPHA,
        )
        return DetectionResult(files, seconds)


def build(device: torch.device) -> None:
    """Add the detection tab's components and events to the open gr.Blocks (inside its tab)."""
    detectors = Detectors(device)
    session = gr.State(DetectionSession(), delete_callback=forget)
    gr.Markdown(
        "## Object detection\nExplain each box a detector finds on a photo, one map per box."
    )
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(
                detector_names(),
                value=SHAPES_DETECTOR,
                label="Detector (or type a torchvision detection model to download its weights)",
                allow_custom_value=True,
                elem_id="det-model",
            )
            upload = gr.File(label="Photo (any image file)", elem_id="det-upload")
        with gr.Column(scale=1):
            method = gr.Dropdown(
                detection_methods(), value=DEFAULT_METHOD, label="Method", elem_id="det-method"
            )
            threshold = gr.Slider(
                0.0,
                1.0,
                value=DEFAULT_THRESHOLD,
                step=0.05,
                label="Score threshold (the detections explained score at least this)",
                elem_id="det-threshold",
            )
            explain = gr.Button("Explain", variant="primary", elem_id="det-explain")
    status = gr.Markdown(READY, elem_id="det-status")
    with gr.Row():
        detections = gr.Image(
            label="The explained boxes",
            type="filepath",
            format="png",
            interactive=False,
            elem_id="det-detections",
        )
        overlays = gr.Gallery(
            label="One overlay per box", format="png", columns=3, height=360, elem_id="det-overlays"
        )
    boxes = gr.Markdown(elem_id="det-boxes")
    downloads = gr.File(
        label="Maps (.npy), overlays (.png) and boxes (.json)",
        file_count="multiple",
        elem_id="det-downloads",
    )
    upload.change(check_photo, upload, status)

    def run(
        state: DetectionSession, path: str | None, name: str | None, chosen: str, score: float
    ) -> list[Any]:
        return explain_request(detectors, state, path, name, chosen, score)

    explain.click(
        run,
        [session, upload, model, method, threshold],
        [session, detections, overlays, boxes, downloads, status],
    )


def check_photo(path: str | None) -> str:
    """The status line once a photo is chosen: its size, or why it cannot be read."""
    if not path:
        return READY
    try:
        image = load_image(path)
    except ReciproCAMError as error:
        return one_line(error, path)
    return f"{Path(path).name}: {image.width} x {image.height} pixels; click Explain."


def explain_request(
    detectors: Detectors,
    state: DetectionSession,
    path: str | None,
    name: str | None,
    method: str,
    threshold: float,
) -> list[Any]:
    """The Explain button: [session, detections picture, overlays and captions, boxes table,
    downloads, status line]. The previous request's files are deleted first; on an error the
    results are cleared and the status says why in one line."""
    if not path:
        return [state, *[gr.update()] * 4, "Upload a photo first."]
    forget(state)
    count = state.requests + 1
    output = Path(tempfile.mkdtemp(prefix="reciprocam-detection-"))
    name = (name or "").strip() or SHAPES_DETECTOR
    try:
        result = detectors.explain(Path(path), name, method, float(threshold), output)
    except ReciproCAMError as error:
        shutil.rmtree(output, ignore_errors=True)
        message = (
            f"{error.finding}; lower the threshold"
            if isinstance(error, NoDetectionError)
            else one_line(error, path)
        )
        cleared = DetectionSession(None, count)
        return [cleared, None, [], "", None, f"Request {count}: {name}: {message}"]
    done = DetectionSession(output, count)
    boxes = len(result.files.overlays)
    note = (
        f"Request {count}: explained {boxes} box(es) of {Path(path).name} with {method} on"
        f" {name} in {result.seconds:.2f} s."
    )
    gallery = [
        (str(picture), f"box {index}: {caption}")
        for index, (picture, caption) in enumerate(
            zip(result.files.overlays, result.files.captions, strict=True)
        )
    ]
    written = result.files
    files = [str(written.maps), *(str(p) for p in written.overlays), str(written.boxes)]
    return [done, str(written.detections), gallery, boxes_table(written.rows), files, note]


def boxes_table(rows: tuple[dict[str, Any], ...]) -> str:
    """The boxes file's rows as a table: each box's number, label, score and corners."""
    lines = ["| box | label | score | x1 | y1 | x2 | y2 |", "|---|---|---|---|---|---|---|"]
    for index, row in enumerate(rows):
        score = "" if row["score"] is None else f"{row['score']:.4f}"
        corners = " | ".join(f"{value:.1f}" for value in row["box"])
        lines.append(f"| {index} | {row['name']} ({row['label']}) | {score} | {corners} |")
    return "\n".join(lines)
