"""mkdocs hooks: benchmark tables generated at build time, and the README published as a page.

- `<!-- table: NAME -->` in a page becomes a Markdown table built from
  `benchmarks/results/NAME.json` (NAME: speed, localisation, paper_table, video), with the
  machine the figures were measured on. A missing file becomes a note saying the benchmark
  has not run, so the figures on the site are always the ones the benchmarks last wrote.
- The repository's README.md becomes the page `guide.md`. Links are written to work on GitHub,
  relative to the file that holds them, and are rewritten for the site: in the guide,
  `docs/PAGE.md#anchor` becomes `PAGE.md#anchor`; in a docs page, `../README.md` becomes the
  guide; the repository files outside docs/ that the README or a page links to (such as the
  speed plot) are published at their repository paths, and a link to a folder becomes its text.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from reciprocam.metrics import PAPER_METRICS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDE = "guide.md"

PLACEHOLDER = re.compile(r"<!-- table: (\w+) -->")
# A relative Markdown link or image target: `](path)`, not a URL, not an absolute path (mkdocs
# warns about those) and not an in-page anchor.
RELATIVE_LINK = re.compile(r"(!?)\[([^\]]*)\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)\)")

SPEED_COLUMNS = [("resnet50", 1), ("resnet50", 8), ("vit_b_16", 1), ("vit_b_16", 8)]
LOCALISATION = ("pointing_game", "energy_pointing_game", "mask_iou")
# Reference maps in the localisation benchmark: a method should beat them.
BASELINE_MAPS = {"random": "random map (reference)", "centre": "centre Gaussian (reference)"}


def ratio(value: float) -> str:
    """A time ratio as the tables print it: 1.01x, 12.3x, 2254x."""
    if value < 10:
        return f"{value:.2f}x"
    return f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def percent(value: float | None) -> str:
    """A fraction x 100 with one decimal, or a dash for a missing (or NaN) value."""
    return "-" if value is None else f"{100 * value:.1f}"


def machine(results: dict[str, Any]) -> str:
    """One sentence naming the machine a result file was measured on."""
    found = results.get("machine")
    if not found:
        return "The machine is not recorded."
    cpu = f"{found.get('cpu', 'an unrecorded CPU')} ({found.get('cores', '?')} cores"
    if found.get("torch_threads") is not None:
        cpu += f", {found['torch_threads']} torch threads"
    gpu = f"GPU {found['gpu']}" if found.get("gpu") else "no GPU"
    versions = f"torch {found.get('torch', '?')}, Python {found.get('python', '?')}"
    return f"Measured on {cpu}), {gpu}; {versions}."


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def speed_table(results: dict[str, Any]) -> str:
    """Per method, time per image over plain inference for each model and batch."""
    cells: dict[str, dict[tuple[str, int], str]] = {}
    inference: dict[tuple[str, int], list[float]] = {}
    openvino: dict[tuple[str, int], str] = {}
    for row in results["rows"]:
        column = (row["model"], row["batch"])
        if row["source"] == "openvino":
            found = row.get("openvino_xai")
            openvino[column] = ratio(found) if found is not None else "failed"
            continue
        if row["source"] != "torch":
            continue
        text = ratio(row["ours"])
        if "pytorch-grad-cam" in row:
            text += f" (pgc {ratio(row['pytorch-grad-cam'])})"
        cells.setdefault(row["method"], {})[column] = text
        inference.setdefault(column, []).append(row["inference_seconds"])
    columns = [c for c in SPEED_COLUMNS if c in inference]
    columns += sorted(c for c in inference if c not in SPEED_COLUMNS)
    header = ["method", *(f"{model}, batch {batch}" for model, batch in columns)]
    rows = [["plain inference", *(f"{1000 * median(inference[c]):.0f} ms" for c in columns)]]
    rows += [[method, *(found.get(c, "-") for c in columns)] for method, found in cells.items()]
    if openvino:
        label = "reciprocam by openvino_xai (on OpenVINO)"
        rows.append([label, *(openvino.get(c, "-") for c in columns)])
    notes = [
        machine(results),
        "Plain inference: median time of one forward pass of the batch. Each other cell: the"
        " method's time over that inference, timed side by side; pgc: pytorch-grad-cam's"
        " implementation of the same method in the same run; -: not measured.",
        "On vit_b_16 the `reciprocam` row is ViT-ReciproCAM.",
    ]
    if openvino:
        notes.append(
            "openvino_xai's row is a ratio to OpenVINO's own inference of the same model;"
            " failed: openvino_xai raised an error (the message is in speed.json)."
        )
    if "rise_masks" in results:
        notes.append(f"RISE ran with {results['rise_masks']} masks.")
    for setting, value in results.get("score_cam_over_reciprocam", {}).items():
        notes.append(f"Score-CAM over ReciproCAM, {setting}: {ratio(value)}.")
    return table(header, rows) + "\n\n" + " ".join(notes)


def localisation_table(results: dict[str, Any]) -> str:
    """Per method, Pointing Game / Energy Pointing Game / mask IoU on each Shapes model."""
    models = results["models"]
    methods: list[str] = []
    for found in models.values():
        methods += [m for m in found["scores"] if m not in methods]
    methods = [m for m in methods if m not in BASELINE_MAPS] + [
        m for m in methods if m in BASELINE_MAPS
    ]
    header = ["method", *(f"{model}: PG / EPG / IoU" for model in models)]
    rows = []
    for method in methods:
        row = [BASELINE_MAPS.get(method, method)]
        for found in models.values():
            scores = found["scores"].get(method)
            if scores is None:
                row.append("not supported" if method in found.get("unsupported", {}) else "-")
            else:
                row.append(" / ".join(percent(scores.get(key)) for key in LOCALISATION))
        rows.append(row)
    notes = [machine(results), f"{results.get('images', '?')} test images per model."]
    short = dict(zip(LOCALISATION, ("PG", "EPG", "IoU"), strict=True))
    for model, found in models.items():
        below = [
            f"{short.get(metric, metric)}: {', '.join(f'`{name}`' for name in names)}"
            for metric, names in found.get("not_above_baselines", {}).items()
            if names
        ]
        if below:
            notes.append(f"Not clearly above the reference maps on {model}: {'; '.join(below)}.")
    return table(header, rows) + "\n\n" + " ".join(notes)


def paper_table(results: dict[str, Any]) -> str:
    """The papers' seven metrics per method, x 100, with the paper's own ReciproCAM rows."""
    labels = []
    for name in PAPER_METRICS:
        info = results["metrics"][name]
        labels.append(f"{info['label']} {'↑' if info['higher_is_better'] else '↓'}")
    rows = [
        [method, *(percent(summary["values"].get(name)) for name in PAPER_METRICS)]
        for method, summary in results["methods"].items()
    ]
    for model, values in results.get("paper_reciprocam_rows", {}).items():
        rows.append([f"ReciproCAM in the paper ({model})", *(f"{v:.1f}" for v in values)])
    run = results.get("run", {})
    images = {summary.get("images") for summary in results["methods"].values()}
    notes = [
        machine(results),
        f"Model: {run.get('model', {}).get('name', 'not recorded')};"
        f" {', '.join(str(i) for i in sorted(images, key=str))} photos.",
        results.get("note", ""),
    ]
    return table(["method", *labels], rows) + "\n\n" + " ".join(n for n in notes if n)


# Where and when the maps of clips and volumes point (bench_video.py), in the table's order.
VIDEO_SCORES = {
    "pointing_game": "PG",
    "energy_in_tube": "energy in tube",
    "temporal_pointing_game": "temporal PG",
    "energy_in_window": "energy in window",
}


def video_table(results: dict[str, Any]) -> str:
    """Per method, its scores and time on the Shapes clips and volumes; then r3d_18's cost."""
    sets = results["sets"]
    methods: list[str] = []
    for found in sets.values():
        methods += [m for m in found["scores"] if m not in methods]
    header = ["method"]
    for name, found in sets.items():
        keys = [key for key in VIDEO_SCORES if key in found["scores"]["reciprocam"]]
        header.append(f"{name}: {' / '.join(VIDEO_SCORES[key] for key in keys)} / time")
    rows = []
    for method in methods:
        row = [BASELINE_MAPS.get(method, method)]
        for found in sets.values():
            scores = found["scores"].get(method)
            if scores is None:
                row.append("-")
                continue
            cells = [percent(scores[key]) for key in VIDEO_SCORES if key in scores]
            time = scores.get("ratio_to_inference")
            row.append(" / ".join([*cells, "-" if time is None else ratio(time)]))
        rows.append(row)
    cost = results["r3d_18"]
    clip = "x".join(str(side) for side in cost["input"][2:])
    notes = [
        machine(results),
        f"{results.get('clips', '?')} test clips and volumes. Scores x 100; time: the"
        " method's over one inference of the same batch.",
        f"r3d_18 at {clip}, batch 1: inference {1000 * cost['seconds']['inference']:.0f} ms,"
        + ", ".join(
            f" {name} {ratio(value)}"
            for name, value in cost["ratios"].items()
            if name != "inference"
        )
        + ".",
    ]
    return table(header, rows) + "\n\n" + " ".join(notes)


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "speed": speed_table,
    "localisation": localisation_table,
    "paper_table": paper_table,
    "video": video_table,
}


def render(name: str, results: Path = RESULTS) -> str:
    """The table for `<!-- table: NAME -->`, or a note when the benchmark has not run."""
    if name not in TABLES:
        raise PluginError(f"docs: unknown table placeholder '{name}'; known: {', '.join(TABLES)}")
    path = results / f"{name}.json"
    if not path.is_file():
        return f"*Not measured yet: `benchmarks/results/{path.name}` does not exist.*"
    try:
        return TABLES[name](json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as error:
        raise PluginError(
            f"docs: {path} does not have the expected structure: {error!r}"
        ) from error


def source_of(src_uri: str) -> Path:
    """The file in the repository that the page `src_uri` is built from."""
    return README if src_uri == GUIDE else DOCS / src_uri


def repository_target(src_uri: str, target: str) -> Path:
    """Where a relative link of the page `src_uri` points in the repository (anchor dropped)."""
    path = target.split("#")[0]
    return Path(posixpath.normpath((source_of(src_uri).parent / path).as_posix()))


def published(path: Path) -> str | None:
    """The site path of a repository file: a docs page's own, the README's guide.md, a file
    outside docs/ at its repository path; None for what the site cannot hold (a folder)."""
    if path.is_dir() or not path.is_relative_to(ROOT):
        return None
    if path == README:
        return GUIDE
    if path.is_relative_to(DOCS):
        return path.relative_to(DOCS).as_posix()
    return path.relative_to(ROOT).as_posix()


def linked_pages() -> list[tuple[str, str]]:
    """Every (page, relative link target) of the README and the docs pages."""
    pages = [(GUIDE, README)] + [
        (path.relative_to(DOCS).as_posix(), path) for path in sorted(DOCS.rglob("*.md"))
    ]
    return [
        (src_uri, target)
        for src_uri, source in pages
        for _, _, target in RELATIVE_LINK.findall(source.read_text())
    ]


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Publish README.md as guide.md, with the repository files it and the pages link to."""
    files.append(File.generated(config, GUIDE, abs_src_path=str(README)))
    for src_uri, target in linked_pages():
        path = repository_target(src_uri, target)
        site_path = published(path)
        if (
            site_path is not None
            and not path.is_relative_to(DOCS)
            and path != README
            and path.is_file()
            and files.get_file_from_path(site_path) is None
        ):
            files.append(File.generated(config, site_path, abs_src_path=str(path)))
    return files


def site_link(src_uri: str, match: re.Match[str]) -> str:
    """A link of the page `src_uri`, as the site needs it (see the module's docstring)."""
    image, text, target = match.groups()
    site_path = published(repository_target(src_uri, target))
    if site_path is None:
        return match.group(0) if image else text
    anchor = target[len(target.split("#")[0]) :]
    relative = posixpath.relpath(site_path, posixpath.dirname(src_uri) or ".")
    return f"{image}[{text}]({relative}{anchor})"


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Fill the table placeholders of a page and rewrite its links for the site."""
    src_uri = page.file.src_uri
    if src_uri == GUIDE or (DOCS / src_uri).is_file():
        markdown = RELATIVE_LINK.sub(lambda match: site_link(src_uri, match), markdown)
    return PLACEHOLDER.sub(lambda match: render(match.group(1)), markdown)
