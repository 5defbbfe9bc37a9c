"""The results of an evaluation as the papers show them: a table, curves and overlays.

`summarize_rows` turns stored rows into one summary per method; `write_tables` writes it as
Markdown, CSV (both in the table's units: x 100 for the papers' percentages) and JSON (raw
fractions, with the run's settings); `write_html` adds the mean Deletion/Insertion curves and
a grid of overlays (methods side by side) for the first images.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImageError
from ..files import write_atomically
from ..images import load_image
from ..metrics import ADCC_MEAN_OF_IMAGES, metric_info, summarize
from ..visualize import crop_to_box, overlay
from ..zoo import Preprocessing
from .dataset import Sample
from .store import ResultRow

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class MethodSummary:
    """One method's line of the table: values are fractions (the mean over its images)."""

    method: str
    images: int
    seconds_per_image: float
    values: dict[str, float]
    measured: dict[str, int]  # per metric, the images it applied to (ground truth: those with)


def columns(metrics: Sequence[str]) -> list[str]:
    """The table's metric columns: the papers' order, ADCC's per-image mean after ADCC."""
    names = list(metrics)
    if "adcc" in names:
        names.insert(names.index("adcc") + 1, ADCC_MEAN_OF_IMAGES)
    return names


def summarize_rows(rows: Sequence[ResultRow], methods: Sequence[str]) -> list[MethodSummary]:
    """Each method's means over its images (NaN: not applicable, skipped)."""
    summaries = []
    for method in methods:
        mine = [row for row in rows if row.method == method]
        names = sorted({name for row in mine for name in row.metrics})
        values = {
            name: np.array(
                [np.nan if row.metrics.get(name) is None else row.metrics[name] for row in mine],
                dtype=np.float64,
            )
            for name in names
        }
        seconds = float(np.mean([row.seconds for row in mine])) if mine else float("nan")
        measured = {name: int(np.sum(~np.isnan(column))) for name, column in values.items()}
        summaries.append(MethodSummary(method, len(mine), seconds, summarize(values), measured))
    return summaries


def _shown(name: str, value: float) -> float:
    return value * 100 if metric_info(name).percent else value


def _best(summaries: Sequence[MethodSummary], name: str) -> float | None:
    found = [s.values[name] for s in summaries if not np.isnan(s.values.get(name, np.nan))]
    if len(found) < 2:
        return None
    return max(found) if metric_info(name).higher_is_better else min(found)


Cell = tuple[str, bool]
"""A table cell's text, and whether it is its column's best value."""


def table_cells(
    summaries: Sequence[MethodSummary], metrics: Sequence[str]
) -> tuple[list[str], list[list[Cell]]]:
    """The header and, per method, (text, is the column's best) cells of the table."""
    names = columns(metrics)
    header = ["Method", *(f"{metric_info(n).label}{metric_info(n).arrow}" for n in names)]
    header += ["Time/img (s)", "Images"]
    best = {name: _best(summaries, name) for name in names}
    body = []
    for summary in summaries:
        cells = [(summary.method, False)]
        for name in names:
            value = summary.values.get(name, float("nan"))
            text = "n/a" if np.isnan(value) else f"{_shown(name, value):.2f}"
            cells.append((text, best[name] is not None and value == best[name]))
        cells.append((f"{summary.seconds_per_image:.4f}", False))
        cells.append((str(summary.images), False))
        body.append(cells)
    return header, body


def write_tables(
    folder: Path,
    summaries: Sequence[MethodSummary],
    metrics: Sequence[str],
    run: Mapping[str, Any],
) -> None:
    """summary.md, summary.csv and summary.json in `folder`."""
    header, body = table_cells(summaries, metrics)
    names = columns(metrics)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(
            "| " + " | ".join(f"**{text}**" if best else text for text, best in row) + " |"
            for row in body
        ),
    ]
    note = (
        "Values x 100 except time; the arrow marks the better direction, bold the best."
        " ADCC is the table form (the harmonic mean of the averaged components);"
        " ADCC/img is the mean of per-image ADCC."
    )
    partial_metrics = [
        f"{metric_info(name).label} on {count} of {summary.images} images"
        for summary in summaries[:1]
        for name, count in summary.measured.items()
        if count < summary.images and name in names
    ]
    if partial_metrics:
        note += (
            f" Measured {', '.join(partial_metrics)} (the others have no ground truth or no"
            " value); per method in summary.json."
        )
    markdown = "\n".join(lines) + f"\n\n{note}\n"
    write_atomically(folder / "summary.md", partial(_write_text, markdown))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", *names, "seconds_per_image", "images"])
    for summary in summaries:
        values = [_shown(n, summary.values.get(n, float("nan"))) for n in names]
        writer.writerow([summary.method, *values, summary.seconds_per_image, summary.images])
    write_atomically(folder / "summary.csv", partial(_write_text, buffer.getvalue()))
    document = {
        "run": dict(run),
        "metrics": {
            name: {
                "label": metric_info(name).label,
                "higher_is_better": metric_info(name).higher_is_better,
            }
            for name in names
        },
        "methods": {
            s.method: {
                "images": s.images,
                "seconds_per_image": _json_number(s.seconds_per_image),
                "values": {n: _json_number(s.values.get(n, float("nan"))) for n in names},
                "images_measured": {n: c for n, c in s.measured.items() if n in names},
            }
            for s in summaries
        },
        "units": "values are fractions (not x 100); NaN is null",
    }
    text = json.dumps(document, indent=2, allow_nan=False)
    write_atomically(folder / "summary.json", partial(_write_text, text + "\n"))


def write_html(
    folder: Path,
    summaries: Sequence[MethodSummary],
    metrics: Sequence[str],
    rows: Sequence[ResultRow],
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    run: Mapping[str, Any],
    skipped: Mapping[str, str],
) -> None:
    """report.html with its figures in `folder`/report/."""
    figures = folder / "report"
    header, body = table_cells(summaries, metrics)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    for row in body:
        table += (
            "<tr>"
            + "".join(
                f"<td>{'<b>' if best else ''}{html.escape(text)}{'</b>' if best else ''}</td>"
                for text, best in row
            )
            + "</tr>"
        )
    table += "</table>"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>reciprocam evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:4px 8px;text-align:right}"
        "img{max-width:100%}figure{display:inline-block;margin:4px;text-align:center}</style>",
        "</head><body><h1>Evaluation</h1>",
        f"<p>{html.escape(_describe(run, rows, skipped))}</p>",
        table,
        "<p>Values x 100 except time; the arrow marks the better direction, bold the best."
        " ADCC: harmonic mean of the averaged components; ADCC/img: mean of per-image ADCC.</p>",
    ]
    curves = _plot_curves(figures, rows, [s.method for s in summaries])
    if curves:
        parts.append(f"<h2>Deletion and insertion</h2><img src='report/{curves}'>")
    grid = _overlay_grid(figures, rows, samples, preprocessing, [s.method for s in summaries])
    if grid:
        parts.append("<h2>Maps</h2>" + grid)
    if skipped:
        parts.append("<h2>Skipped images</h2><ul>")
        parts.extend(
            f"<li>{html.escape(k)}: {html.escape(r)}</li>" for k, r in sorted(skipped.items())
        )
        parts.append("</ul>")
    parts.append("</body></html>\n")
    write_atomically(folder / REPORT_FILE, partial(_write_text, "\n".join(parts)))


def _describe(run: Mapping[str, Any], rows: Sequence[ResultRow], skipped: Mapping[str, str]) -> str:
    model = run.get("model", {}).get("name", "?")
    images = len({row.image for row in rows})
    target = "the top-1 prediction" if run.get("target") == "prediction" else "the label"
    return (
        f"Model {model}; {images} images evaluated, {len(skipped)} skipped;"
        f" each map explains {target}."
    )


def _plot_curves(figures: Path, rows: Sequence[ResultRow], methods: Sequence[str]) -> str | None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), dpi=100)
    axes = figure.subplots(1, 2)
    drawn = False
    for axis, kind in zip(axes, ("deletion", "insertion"), strict=True):
        lines = 0
        for method in methods:
            curves = [
                getattr(row, f"{kind}_curve")
                for row in rows
                if row.method == method and getattr(row, f"{kind}_curve") is not None
            ]
            lengths = {len(curve) for curve in curves}
            if len(lengths) != 1:
                continue
            mean = np.mean(curves, axis=0)
            axis.plot(np.linspace(0, 1, len(mean)), mean, label=method)
            lines += 1
        axis.set_title(f"{kind.capitalize()} (mean over images)")
        axis.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        axis.set_ylabel("class probability")
        if lines:
            axis.legend(fontsize=8)
            drawn = True
    if not drawn:
        return None
    figure.tight_layout()
    write_atomically(figures / "curves.png", partial(_save_figure, figure))
    return "curves.png"


def _overlay_grid(
    figures: Path,
    rows: Sequence[ResultRow],
    samples: Sequence[Sample],
    preprocessing: Preprocessing,
    methods: Sequence[str],
) -> str:
    maps = {(row.image, row.method): row for row in rows if row.saliency is not None}
    by_key = {sample.key: sample for sample in samples}
    keys = sorted({image for image, _ in maps})
    lines = []
    for number, key in enumerate(keys):
        try:
            photo = load_image(by_key[key].path)
        except (ImageError, KeyError):
            continue
        crop = crop_to_box(photo, preprocessing(photo)[1])
        cells = [_figure(figures, f"{number}-photo.png", crop, key)]
        for method in methods:
            row = maps.get((key, method))
            if row is None or row.saliency is None:
                continue
            picture = overlay(crop, torch.from_numpy(row.saliency.astype(np.float32) / 255))
            cells.append(_figure(figures, f"{number}-{method}.png", picture, method))
        lines.append("<div>" + "".join(cells) + "</div>")
    return "\n".join(lines)


def _figure(figures: Path, name: str, picture: Any, caption: str) -> str:
    thumbnail = picture.copy()
    thumbnail.thumbnail((224, 224))
    write_atomically(figures / name, partial(_save_png, thumbnail))
    return (
        f"<figure><img src='report/{html.escape(name)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else value


def _write_text(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8")


def _save_png(picture: Any, path: Path) -> None:
    picture.save(path, format="PNG")


def _save_figure(figure: Any, path: Path) -> None:
    figure.savefig(path, format="png")
