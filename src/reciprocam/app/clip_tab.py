"""The page's tab for videos and volumes: pick a video or volume classifier, upload a video
(.mp4, .mkv, ...) or a volume (.npy, .nii, .nii.gz), and see what `reciprocam explain FILE
--model NAME` makes of it: the animated overlay of a video's clip or the montage of a volume's
slices, its top classes, and the .npy map, written by the command's own code."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from .._model import model_lock, model_output
from ..clip_inputs import ClipInput, file_stem, read_clip_input, write_clip_map
from ..clips import VIDEO_SUFFIXES, VOLUME_SUFFIXES
from ..errors import ReciproCAMError
from ..explainer import Explainer
from ..photos import Prediction, category_name, top_classes, top_predictions
from ..registry import explainer, methods
from ..zoo.video import (
    CLIP_LENGTHS,
    SHAPES_VIDEO,
    SHAPES_VOLUME,
    LoadedClipModel,
    load_video_model,
)
from .explore import TOP, class_choices
from .loaded import LoadedOnce
from .sessions import class_buttons, forget, one_line, pick_on_click, top_class_buttons

MODELS = (SHAPES_VIDEO, SHAPES_VOLUME, *CLIP_LENGTHS)
"""The tab's models: the Shapes ones (offline, trained) first, then torchvision's (their
Kinetics-400 weights downloaded when first chosen)."""
METHODS = tuple(m for m in methods() if m != "vit-reciprocam")
"""The methods a video or volume CNN takes (ViT-ReciproCAM explains 2-D transformers)."""
_CACHED_EXPLAINERS = 8  # explainers kept per model (with their resolved layers)


@dataclass(frozen=True)
class ClipResult:
    """One explanation of a file, as `reciprocam explain FILE --model NAME` writes it."""

    method: str
    target: Prediction  # the class explained, with its probability
    top: tuple[Prediction, ...]
    layer: str | None  # the target layer the method resolved
    seconds: float
    picture: Path  # the animated GIF of a video, the montage PNG of a volume
    map_path: Path  # the (T, H, W) or (D, H, W) float32 map


@dataclass(frozen=True)
class ClipSession:
    """One browser session's model, file (read for the model once, when chosen), its top
    classes, and its latest result and the folder of its files."""

    model: str = MODELS[0]
    clip: ClipInput | None = None
    top: tuple[Prediction, ...] = ()
    result: ClipResult | None = None
    output: Path | None = None
    requests: int = 0

    @property
    def path(self) -> Path | None:
        return None if self.clip is None else self.clip.path


class ClipModel:
    """A video or volume classifier loaded once and shared by every request, with the explainers
    built so far. Requests use it one at a time, under its `model_lock` (a forward pass in
    another thread would run through an explanation's hooks)."""

    def __init__(self, loaded: LoadedClipModel, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        loaded.model.to(device)
        self._explainers: LoadedOnce[str, Explainer] = LoadedOnce(
            lambda method: explainer(method, loaded.model),
            kept=_CACHED_EXPLAINERS,
            drop=Explainer.close,
        )

    def predict(self, path: Path) -> tuple[ClipInput, list[Prediction]]:
        """The file read for the model (InputError if it does not fit), and the model's top
        classes on it."""
        item = read_clip_input(path, self.loaded)
        x = item.tensor[None].to(self.device)
        with model_lock(self.loaded.model), torch.inference_mode():
            logits = model_output(self.loaded.model, x)
        return item, top_classes(logits, TOP, self.loaded.categories)

    def explain(self, item: ClipInput, method: str, index: int, output: Path) -> ClipResult:
        """Explain class `index` of the file read by `predict` with `method`, writing its map
        and picture into `output` under the names `reciprocam explain` gives them."""
        x = item.tensor[None].to(self.device)
        with model_lock(self.loaded.model):
            found = self._explainers[method]
            start = time.perf_counter()
            explanation = found.explain(x, index)
            seconds = time.perf_counter() - start
            layer = found.target_layer
        saliency = explanation.maps[0].float().cpu()
        probability = float(explanation.target_probabilities[0][0])
        top = top_predictions(explanation, TOP, self.loaded.categories)
        target = Prediction(index, category_name(index, self.loaded.categories), probability)
        base = output / f"{file_stem(item.path)}_{method}"
        picture = write_clip_map(item, saliency, base)
        return ClipResult(
            method,
            target,
            tuple(top),
            None if layer is None else str(layer),
            seconds,
            picture,
            base.with_name(f"{base.name}.npy"),
        )


def clip_models(device: torch.device, kept: int = 2) -> LoadedOnce[str, ClipModel]:
    """The tab's models by name, each loaded once, when first chosen: the Shapes ones with
    their shipped weights, torchvision's with their pretrained ones; `kept` stay loaded."""

    def load(name: str) -> ClipModel:
        shapes = name in (SHAPES_VIDEO, SHAPES_VOLUME)
        return ClipModel(load_video_model(name, None if shapes else "DEFAULT"), device)

    return LoadedOnce(load, kept=kept)


class ClipTab:
    """The tab's event handlers, each returning the new values of its outputs (the session
    first): choosing a model, a file, and explaining."""

    def __init__(self, device: torch.device) -> None:
        self.models = clip_models(device)

    def choose(self, path: str | Path | None, state: ClipSession) -> list[Any]:
        """A file uploaded (or cleared): its top classes under the session's model.
        Outputs: session, status, class dropdown, the TOP buttons."""
        kept = ClipSession(state.model, output=state.output, requests=state.requests)
        if not path:
            return [kept, "Upload a video or a volume.", gr.update(value=None), *class_buttons()]
        path = Path(path)
        try:
            model = self.models[state.model]
            clip, top = model.predict(path)
        except (ReciproCAMError, RuntimeError) as error:  # RuntimeError: the model's own
            return [kept, one_line(error, path), gr.update(value=None), *class_buttons()]
        best = top[0]
        note = f"{path.name}: {state.model} sees {best.name} ({best.probability:.0%})."
        chosen = replace(kept, clip=clip, top=tuple(top))
        classes = gr.update(choices=class_choices(model.loaded.categories), value=best.index)
        return [chosen, note, classes, *class_buttons(top)]

    def switch(self, name: str, state: ClipSession) -> list[Any]:
        """Another model: its classes, and the file's top classes under it. A name that cannot
        load leaves everything as it was. Outputs: model dropdown, session, status, class
        dropdown, the TOP buttons."""
        try:
            model = self.models[name]
        except ReciproCAMError as error:
            unchanged = [gr.update()] * (1 + TOP)
            return [gr.update(value=state.model), state, one_line(error), *unchanged]
        moved, note, _, *buttons = self.choose(state.path, replace(state, model=name))
        if moved.path is None and state.path is None:
            note = f"Now explaining with {name}: upload a video or a volume."
        best = moved.top[0].index if moved.top else None
        classes = gr.update(choices=class_choices(model.loaded.categories), value=best)
        return [gr.update(), moved, note, classes, *buttons]

    def explain(self, state: ClipSession, method: str, index: int | None) -> list[Any]:
        """Explain the session's file. Outputs: session, picture, result, downloads, status."""
        unchanged = [gr.update()] * 3
        if state.clip is None:
            return [state, *unchanged, "Upload a video or a volume first."]
        if index is None:
            index = state.top[0].index
        forget(state)
        count = state.requests + 1
        output = Path(tempfile.mkdtemp(prefix="reciprocam-app-clip-"))
        done = replace(state, result=None, output=output, requests=count)
        try:
            result = self.models[state.model].explain(state.clip, method, int(index), output)
        except (ReciproCAMError, RuntimeError) as error:  # no stale results beside the message
            return [done, None, "", [], f"Request {count}: {one_line(error, state.clip.path)}"]
        note = (
            f"Request {count}: explained {result.target.name} with {method}"
            f" in {result.seconds:.2f} s."
        )
        return [
            replace(done, result=result),
            str(result.picture),
            _summary(result),
            [str(result.map_path), str(result.picture)],
            note,
        ]


def build(device: torch.device) -> None:
    """Add the tab's components and events to the open gr.Blocks (inside its gr.Tab)."""
    tab = ClipTab(device)
    session = gr.State(ClipSession(), delete_callback=forget)
    with gr.Row():
        with gr.Column(scale=1):
            chosen_model = gr.Dropdown(
                list(MODELS),
                value=MODELS[0],
                label="Video or volume model (torchvision's download their weights)",
                allow_custom_value=True,
                elem_id="clip-model",
            )
            upload = gr.File(
                label=(
                    f"Video ({', '.join(sorted(VIDEO_SUFFIXES))})"
                    f" or volume ({', '.join(VOLUME_SUFFIXES)})"
                ),
                elem_id="clip-upload",
            )
        with gr.Column(scale=2):
            method = gr.Dropdown(
                list(METHODS), value="reciprocam", label="Method", elem_id="clip-method"
            )
            top = top_class_buttons("clip-")
            target = gr.Dropdown(
                [],
                value=None,
                label="Class (type to search)",
                filterable=True,
                elem_id="clip-class",
            )
            explain = gr.Button("Explain", variant="primary", elem_id="clip-explain")
    status = gr.Markdown("Upload a video or a volume.", elem_id="clip-status")
    with gr.Row():
        picture = gr.Image(
            label="The clip's frames with their maps (GIF), or the volume's slices (PNG)",
            type="filepath",
            interactive=False,
            height=420,
            elem_id="clip-picture",
        )
        result = gr.Markdown(elem_id="clip-result")
    downloads = gr.File(
        label="Map (.npy) and picture (.gif or .png)",
        file_count="multiple",
        elem_id="clip-downloads",
    )

    upload.change(tab.choose, [upload, session], [session, status, target, *top])
    chosen_model.input(
        tab.switch, [chosen_model, session], [chosen_model, session, status, target, *top]
    )
    pick_on_click(top, session, target)
    explain.click(
        tab.explain, [session, method, target], [session, picture, result, downloads, status]
    )


def _summary(result: ClipResult) -> str:
    """The class explained, the method, its layer and time, and a table of the top classes."""
    target = result.target
    layer = f" on layer `{result.layer}`" if result.layer else ""
    rows = [
        f"**{target.name}** ({target.index}, {target.probability:.1%}) explained with"
        f" {result.method}{layer} in {result.seconds:.3f} s",
        "",
        "| rank | class | probability |",
        "|---|---|---|",
    ]
    rows += [
        f"| {rank} | {p.name} ({p.index}) | {p.probability:.4f} |"
        for rank, p in enumerate(result.top, 1)
    ]
    return "\n".join(rows)
