"""mkdocs hook: replace `<!-- table: NAME -->` in a page with a Markdown table generated from
`benchmarks/results/NAME.json` (speed, localisation, paper_table), so the site never shows stale
figures."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PLACEHOLDER = re.compile(r"<!-- table: (\w+) -->")
SPEED_COLUMNS = [("resnet50", 1), ("resnet50", 8), ("vit_b_16", 1), ("vit_b_16", 8)]
PAPER_METRICS = ["average_drop", "increase_in_confidence", "deletion", "insertion", "coherency"]
PAPER_METRICS += ["complexity", "adcc"]


def ratio(value: float) -> str:
    """A time ratio as the tables print it: 1.01x, 12.3x, 2254x."""
    if value < 10:
        return f"{value:.2f}x"
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def percent(value: float | None) -> str:
    """A fraction x 100 with one decimal, or a dash."""
    return "-" if value is None else f"{100 * value:.1f}"


def machine(results: dict[str, Any]) -> str:
    """One line naming the machine a result ran on."""
    found = results["machine"]
    device = found.get("gpu") or f"{found['cpu']}, {found['cores']} cores"
    return f"Measured on {device}, torch {found['torch']}, Python {found['python']}."


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def speed_table(results: dict[str, Any]) -> str:
    """Per method, ours (and pytorch-grad-cam's) time over inference per model and batch."""
    cells: dict[str, dict[tuple[str, int], str]] = {}
    for row in results["rows"]:
        if row["source"] != "torch":
            continue
        text = ratio(row["ours"])
        if "pytorch-grad-cam" in row:
            text += f" (pgc {ratio(row['pytorch-grad-cam'])})"
        cells.setdefault(row["method"], {})[row["model"], row["batch"]] = text
    header = ["method", *(f"{model}, batch {batch}" for model, batch in SPEED_COLUMNS)]
    rows = [
        [method, *(by_column.get(column, "-") for column in SPEED_COLUMNS)]
        for method, by_column in cells.items()
    ]
    note = (
        f"\n\n{machine(results)} Time per image over plain inference of the same model and"
        " batch, CPU, 224x224; pgc: pytorch-grad-cam measured in the same run."
    )
    return table(header, rows) + note


def localisation_table(results: dict[str, Any]) -> str:
    """Per method, PG / EPG / IoU on each trained Shapes model."""
    models = list(results["models"])
    methods = list(results["models"][models[0]]["scores"])
    header = ["method", *(f"{model} PG / EPG / IoU" for model in models)]
    rows = []
    for method in methods:
        row = [method]
        for model in models:
            scores = results["models"][model]["scores"].get(method)
            if scores is None:
                row.append("-")
                continue
            keys = ("pointing_game", "energy_pointing_game", "mask_iou")
            row.append(" / ".join(percent(scores.get(key)) for key in keys))
        rows.append(row)
    return table(header, rows) + f"\n\n{machine(results)} {results['images']} test images."


def paper_table(results: dict[str, Any]) -> str:
    """The papers' seven columns per method, x 100."""
    labels = [results["metrics"][name]["label"] for name in PAPER_METRICS]
    rows = [
        [method, *(percent(summary["values"].get(name)) for name in PAPER_METRICS)]
        for method, summary in results["methods"].items()
    ]
    return table(["method", *labels], rows) + f"\n\n{machine(results)} {results.get('note', '')}"


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "speed": speed_table,
    "localisation": localisation_table,
    "paper_table": paper_table,
}


def render(name: str) -> str:
    """The table for `<!-- table: NAME -->`, or a line saying the benchmark has not run."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return f"*Not yet run: `{path.name}` is missing from benchmarks/results.*"
    return TABLES[name](json.loads(path.read_text()))


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' hook: fill every placeholder of the page."""
    return PLACEHOLDER.sub(lambda match: render(match.group(1)), markdown)
