"""The documentation site builds in strict mode: the API reference comes from the docstrings,
the methods page shows the figures of benchmarks/results/*.json as docs/hooks.py formats them,
and the README is published as the guide."""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mkdocs.exceptions import PluginError

import reciprocam
from reciprocam.onnx import export_onnx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load_hooks() -> ModuleType:
    """docs/hooks.py as a module, to format expected values exactly as the site does."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def page_text(site: Path, page: str) -> str:
    """The visible text of a built page, tags removed and whitespace collapsed."""
    markup = (site / page / "index.html").read_text()
    markup = re.sub(r"<script.*?</script>", " ", markup, flags=re.DOTALL)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup)))


def summary_line(obj: object) -> str:
    """The first line of an object's docstring as the page shows it (no Markdown backticks)."""
    doc = inspect.getdoc(obj)
    assert doc, f"{obj} has no docstring"
    return doc.splitlines()[0].replace("`", "")


def public_names(module: ModuleType) -> list[str]:
    """The classes and functions a module without __all__ defines itself."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    ]


def read_results(name: str) -> dict[str, Any]:
    """One benchmark's result file."""
    results: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return results


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    return load_hooks()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    return folder


def test_the_api_reference_shows_the_docstrings(site: Path) -> None:
    explainers = page_text(site, "api/explainers")
    assert summary_line(reciprocam.ReciproCAM) in explainers
    assert summary_line(reciprocam.ViTReciproCAM) in explainers
    assert summary_line(reciprocam.explainer) in explainers
    onnx = page_text(site, "api/onnx")
    assert summary_line(export_onnx) in onnx
    assert 'id="reciprocam.onnx.export_onnx"' in (site / "api/onnx/index.html").read_text()


def test_every_public_name_has_an_entry(site: Path) -> None:
    anchors: set[str] = set()
    for page in (site / "api").rglob("index.html"):
        anchors |= set(re.findall(r'id="(reciprocam[\w.]*)"', page.read_text()))
    for name in ("", ".metrics", ".onnx", ".evaluation", ".zoo", ".errors"):
        module = importlib.import_module(f"reciprocam{name}")
        for public in getattr(module, "__all__", None) or public_names(module):
            if public != "__version__":
                assert any(a.endswith(f".{public}") for a in anchors), f"{name}.{public}"


def test_the_speed_table_shows_speed_json(site: Path, hooks: ModuleType) -> None:
    speed = read_results("speed")
    ours = {
        (row["model"], row["batch"]): hooks.ratio(row["ours"])
        for row in speed["rows"]
        if row["source"] == "torch" and row["method"] == "reciprocam"
    }
    assert ("resnet50", 1) in ours
    text = page_text(site, "methods")
    columns = [column for column in hooks.SPEED_COLUMNS if column in ours]
    assert "reciprocam " + " ".join(ours[column] for column in columns) in text
    (gradcam,) = [
        row
        for row in speed["rows"]
        if (row["source"], row["model"], row["batch"], row["method"])
        == ("torch", "resnet50", 1, "gradcam")
    ]
    pgc = hooks.ratio(gradcam["pytorch-grad-cam"])
    assert f"gradcam {hooks.ratio(gradcam['ours'])} (pgc {pgc})" in text
    assert hooks.machine(speed) in text
    assert speed["machine"]["cpu"] in text


def test_the_localisation_table_shows_localisation_json(site: Path, hooks: ModuleType) -> None:
    scores = read_results("localisation")["models"]["cnn"]["scores"]["reciprocam"]
    expected = " / ".join(hooks.percent(scores[key]) for key in hooks.LOCALISATION)
    assert f"reciprocam {expected}" in page_text(site, "methods")


def test_the_video_table_shows_video_json(site: Path, hooks: ModuleType) -> None:
    results = read_results("video")
    text = page_text(site, "video")
    for found in results["sets"].values():
        scores = found["scores"]["reciprocam"]
        cells = [hooks.percent(scores[key]) for key in hooks.VIDEO_SCORES if key in scores]
        assert " / ".join([*cells, hooks.ratio(scores["ratio_to_inference"])]) in text
    assert f"reciprocam {hooks.ratio(results['r3d_18']['ratios']['reciprocam'])}" in text
    assert hooks.machine(results) in text


def test_the_papers_table_or_its_absence(site: Path, hooks: ModuleType) -> None:
    text = page_text(site, "methods").split("The papers' metrics on real photos")[-1]
    if not (RESULTS / "paper_table.json").is_file():
        assert "Not measured yet: benchmarks/results/paper_table.json does not exist." in text
        return
    values = read_results("paper_table")["methods"]["reciprocam"]["values"]
    cells = " ".join(hooks.percent(values.get(name)) for name in hooks.PAPER_METRICS)
    assert f"reciprocam {cells}" in text
    assert "<!-- table:" not in (site / "methods" / "index.html").read_text()


def test_a_missing_result_file_becomes_a_note(tmp_path: Path, hooks: ModuleType) -> None:
    for name in hooks.TABLES:
        assert hooks.render(name, tmp_path).startswith("*Not measured yet")
    (tmp_path / "speed.json").write_text(json.dumps({"rows": [{"source": "torch"}]}))
    with pytest.raises(PluginError, match="does not have the expected structure"):
        hooks.render("speed", tmp_path)


def test_the_readme_is_the_guide(site: Path) -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    guide = page_text(site, "guide")
    for heading in headings:
        assert heading.replace("`", "").replace("*", "") in guide
    assert (site / "benchmarks" / "results" / "speed.png").is_file()
    index = (site / "index.html").read_text()
    for link in ('href="guide/"', 'href="methods/"', 'href="api/"'):
        assert link in index
