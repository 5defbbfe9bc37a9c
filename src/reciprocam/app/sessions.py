"""What the page's tabs share about a browser session: the top-class buttons, one-line
messages, and deleting the files of its latest results."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

from ..errors import first_line
from ..photos import Prediction
from .explore import TOP


class WritesFiles(Protocol):
    """A session's state: the folder of its latest results, or None."""

    @property
    def output(self) -> Path | None: ...


def forget(state: WritesFiles) -> None:
    """Delete the files of a session's latest results (before its next, and once it closes)."""
    if state.output is not None:
        shutil.rmtree(state.output, ignore_errors=True)


def one_line(error: Exception, path: str | Path | None = None) -> str:
    """The error's first line, naming an uploaded file by its name, not its temporary path."""
    text = first_line(error)
    return text if path is None else text.replace(str(path), Path(path).name)


def class_buttons(predictions: Sequence[Prediction] = ()) -> list[Any]:
    """The TOP buttons' updates: one per predicted class ("tabby (17%)"), the rest hidden."""
    shown = [gr.update(value=f"{p.name} ({p.probability:.0%})", visible=True) for p in predictions]
    return shown + [gr.update(visible=False)] * (TOP - len(shown))


def top_class_buttons(prefix: str = "") -> list[gr.Button]:
    """A row of TOP hidden buttons (elem_ids `<prefix>top-<i>`), shown by `class_buttons`."""
    with gr.Row():
        return [gr.Button(visible=False, size="sm", elem_id=f"{prefix}top-{i}") for i in range(TOP)]


def pick_on_click(buttons: Sequence[gr.Button], session: gr.State, target: gr.Dropdown) -> None:
    """Each button, clicked, sets `target` to its class: the session's `top[rank]`."""
    for rank, button in enumerate(buttons):
        button.click(lambda state, rank=rank: state.top[rank].index, session, target)
