"""The page, one tab per task: photos (pick a model, a photo, the methods, a class, a layer and
the options; see and download the explanations), detection (`detection_tab`), and videos and
volumes (`clip_tab`). Each browser session keeps its own photo and results (`Session` in a
gr.State)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from ..demo import DEMO_PHOTOS, demo_photos
from ..errors import ModelError, ReciproCAMError, first_line
from ..layout import grid_text
from ..names import DEMO_MODEL
from ..photos import Prediction
from ..registry import methods
from ..zoo import LoadedModel
from . import clip_tab, detection_tab
from .explore import TOP, Explorer, MethodResult, Models, Settings, class_choices
from .pictures import curves_figure, grid_picture
from .sessions import class_buttons, forget, one_line, pick_on_click, top_class_buttons

DEFAULT = "default"
AUTOMATIC = ""  # the layer dropdown's value for the automatic layer
OFFLINE_MODELS = (DEMO_MODEL, "shapes_segmenter")
"""The models every page offers besides its own: they load without a download."""
CACHE_SECONDS = 3600
"""Gradio's copies of the pictures and files it served are deleted after about this long."""


@dataclass(frozen=True)
class Session:
    """One browser session's model, photo, its top classes, and its latest results and their
    folder."""

    model: str = ""  # "" the page's first model
    photo: Path | None = None
    top: tuple[Prediction, ...] = ()
    results: tuple[MethodResult, ...] = ()
    output: Path | None = None
    requests: int = 0


def build_app(
    model: LoadedModel | str | None = None,
    *,
    checkpoint: Path | None = None,
    device: torch.device | None = None,
    others: Sequence[LoadedModel | str] = OFFLINE_MODELS,
) -> gr.Blocks:
    """The page for `model`: a LoadedModel, or a name `load_model` takes (default: the offline
    demo model) with an optional `checkpoint`, loaded once, here. The page also offers
    `others` (loaded when first chosen) and any model name typed in, with its pretrained
    weights (downloaded by torchvision or timm)."""
    device = device or torch.device("cpu")
    models = Models(model, checkpoint, others, device)
    first = models[models.names[0]]
    app = gr.Blocks(
        title="reciprocam app", analytics_enabled=False, delete_cache=(600, CACHE_SECONDS)
    )
    with app:
        with gr.Tab("Photos: classes and segmentation regions"):
            session = gr.State(Session(), delete_callback=forget)
            heading = gr.Markdown(_heading(first))
            with gr.Row():
                with gr.Column(scale=1):
                    chosen_model = gr.Dropdown(
                        models.names,
                        value=models.names[0],
                        label="Model (or type a torchvision or timm:NAME to download)",
                        allow_custom_value=True,
                        elem_id="model",
                    )
                    upload = gr.File(label="Photo (any image file)", elem_id="upload")
                    demo = _demo_choice()
                    preview = gr.Image(
                        label="Photo", type="pil", format="png", interactive=False, height=220
                    )
                with gr.Column(scale=2):
                    chosen = gr.CheckboxGroup(
                        methods(), value=["reciprocam"], label="Methods", elem_id="methods"
                    )
                    top = top_class_buttons()
                    target = gr.Dropdown(
                        class_choices(first.loaded.categories),
                        value=None,
                        label="Class (type to search)",
                        filterable=True,
                        elem_id="class",
                    )
                    with gr.Row():
                        layer = gr.Dropdown(
                            [("automatic", AUTOMATIC), *first.layers],
                            value=AUTOMATIC,
                            label="Target layer (grid)",
                            elem_id="layer",
                        )
                        mask = gr.Radio(
                            [DEFAULT, "pixel", "gaussian"], value=DEFAULT, label="Mask (ReciproCAM)"
                        )
                        score = gr.Radio(
                            [DEFAULT, "softmax", "logit", "sigmoid"],
                            value=DEFAULT,
                            label="Score (ReciproCAM, RISE)",
                        )
                    curves = gr.Checkbox(value=True, label="Deletion and Insertion curves")
                    explain = gr.Button("Explain", variant="primary", elem_id="explain")
            status = gr.Markdown("Upload a photo or pick a demo photo.", elem_id="status")
            with gr.Row():
                overlays = gr.Gallery(
                    label="Overlays", format="png", columns=3, height=320, elem_id="overlays"
                )
                grids = gr.Gallery(
                    label="Raw grids", format="png", columns=3, height=320, elem_id="grids"
                )
            summary = gr.Markdown(elem_id="summary")
            plot = gr.Plot(label="Deletion and Insertion", elem_id="curves")
            downloads = gr.File(
                label="Maps (.npy) and overlays (.png)", file_count="multiple", elem_id="downloads"
            )

            def choose(path: str | Path | None, state: Session) -> list[Any]:
                if not path:
                    return [state, gr.update(), gr.update(), gr.update(), *class_buttons()]
                try:
                    image, predicted = models[state.model].predict(Path(path))
                except ReciproCAMError as error:
                    message = one_line(error, path)
                    cleared = Session(state.model, output=state.output, requests=state.requests)
                    return [cleared, None, message, gr.update(), *class_buttons()]
                best = predicted[0]
                note = f"{Path(path).name}: the model sees {best.name} ({best.probability:.0%})."
                chosen_state = Session(
                    state.model,
                    Path(path),
                    tuple(predicted),
                    output=state.output,
                    requests=state.requests,
                )
                best_class = gr.update(value=best.index)
                return [chosen_state, image, note, best_class, *class_buttons(predicted)]

            photo_outputs = [session, preview, status, target, *top]

            def switch(name: str, state: Session) -> list[Any]:
                """Another model: its classes and layers, and the photo's top classes under it."""
                try:
                    explorer = models[name]
                except ReciproCAMError as error:
                    kept = gr.update(value=state.model or models.names[0])
                    unchanged = [gr.update()] * (3 + TOP)
                    return [
                        kept,
                        state,
                        *unchanged[:2],
                        f"{name}: {first_line(error)}",
                        *unchanged[2:],
                    ]
                forget(state)
                fresh = Session(name, requests=state.requests)
                moved, _, note, _, *buttons = choose(state.photo, fresh)
                best = moved.top[0].index if moved.top else None
                return [
                    gr.update(),
                    moved,
                    _heading(explorer),
                    gr.update(
                        choices=[("automatic", AUTOMATIC), *explorer.layers], value=AUTOMATIC
                    ),
                    note if moved.photo else f"Now explaining with {name}.",
                    gr.update(choices=class_choices(explorer.loaded.categories), value=best),
                    *buttons,
                ]

            chosen_model.input(
                switch,
                [chosen_model, session],
                [chosen_model, session, heading, layer, status, target, *top],
            )
            upload.change(choose, [upload, session], photo_outputs)
            if demo is not None:
                demo.change(choose, [demo, session], photo_outputs)
            pick_on_click(top, session, target)

            def run(
                state: Session,
                names: list[str],
                index: int | None,
                layer_name: str,
                mask_name: str,
                score_name: str,
                with_curves: bool,
            ) -> list[Any]:
                unchanged = [gr.update()] * 5
                if state.photo is None:
                    return [state, *unchanged, "Upload a photo or pick a demo photo first."]
                if not names:
                    return [state, *unchanged, "Choose at least one method."]
                if index is None:
                    index = state.top[0].index
                settings = Settings(
                    layer_name or None,
                    None if mask_name == DEFAULT else mask_name,
                    None if score_name == DEFAULT else score_name,
                    with_curves,
                )
                forget(state)
                output = Path(tempfile.mkdtemp(prefix="reciprocam-app-"))
                results, failures = [], []
                for name in names:
                    try:
                        explained = models[state.model].explain(
                            state.photo, name, index, settings, output
                        )
                        results.append(explained)
                    except ReciproCAMError as error:
                        failures.append(f"{name}: {one_line(error, state.photo)}")
                count = state.requests + 1
                done = replace(state, results=tuple(results), output=output, requests=count)
                if not results:  # no stale results beside the message
                    empty: list[Any] = [[], "", None, [], None]
                    return [done, *empty, f"Request {count}: " + "; ".join(failures)]
                seconds = sum(r.seconds for r in results)
                note = f"Request {count}: explained {results[0].explained.target.name} with"
                note += f" {len(results)} method(s) in {seconds:.2f} s."
                note += "".join(f" Failed: {f}." for f in failures)
                return [
                    done,
                    [(r.explained.overlay, _caption(r)) for r in results],
                    _summary(results),
                    curves_figure(results) if with_curves else None,
                    [(grid_picture(r.grid), _grid_caption(r)) for r in results],
                    [
                        str(p)
                        for r in results
                        for p in (r.explained.map_path, r.explained.overlay_path)
                    ],
                    note,
                ]

            explain.click(
                run,
                [session, chosen, target, layer, mask, score, curves],
                [session, overlays, summary, plot, grids, downloads, status],
            )
        with gr.Tab("Detection: a map per box"):
            detection_tab.build(device)
        with gr.Tab("Videos and volumes"):
            clip_tab.build(device)
    return app


def _heading(explorer: Explorer) -> str:
    task = "region of a class (segmentation)" if explorer.segmenter else "class"
    return f"## reciprocam app: {explorer.loaded.name}\nExplain a photo's {task} with any method."


def _demo_choice() -> gr.Dropdown | None:
    """The bundled demo photos to pick from, or None without the demo extra."""
    try:
        paths = demo_photos()
    except ModelError:
        return None
    titles = [title for _, _, title in DEMO_PHOTOS]
    choices = [(title, str(path)) for title, path in zip(titles, paths, strict=True)]
    return gr.Dropdown(choices, value=None, label="or a demo photo", elem_id="demo")


def _caption(result: MethodResult) -> str:
    target = result.explained.target
    return f"{result.method}: {target.name} ({target.probability:.0%}), {result.seconds:.2f} s"


def _grid_caption(result: MethodResult) -> str:
    return f"{result.method}: {grid_text(tuple(result.grid.shape))} grid"


def _summary(results: list[MethodResult]) -> str:
    """A table of each method's class, probability, time and AUCs."""
    rows = [
        "| method | class | probability | seconds | Deletion AUC ↓ | Insertion AUC ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        deletion = "" if r.deletion is None else f"{r.deletion.auc:.4f}"
        insertion = "" if r.insertion is None else f"{r.insertion.auc:.4f}"
        target = r.explained.target
        rows.append(
            f"| {r.method} | {target.name} ({target.index}) | {target.probability:.4f}"
            f" | {r.seconds:.3f} | {deletion} | {insertion} |"
        )
    return "\n".join(rows)
