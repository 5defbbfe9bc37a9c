"""The documentation site builds in strict mode, with the API reference from the docstrings
and the benchmark tables generated from benchmarks/results."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def page_text(site: Path, page: str) -> str:
    markup = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", markup)))


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
    )
    assert built.returncode == 0, built.stderr
    return folder


def test_the_api_reference_comes_from_the_docstrings(site: Path) -> None:
    text = page_text(site, "api")
    assert "ReciproCAM for CNNs: one forward pass gives the maps of every class." in text
    assert "Write model with its ReciproCAM maps of every class as one ONNX file" in text
    for name in ("ViTReciproCAM", "ScoreCAM", "MetricSuite", "OnnxExplainer", "OutputError"):
        assert name in text


def test_the_methods_page_shows_the_benchmark_figures(site: Path) -> None:
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = page_text(site, "methods")
    speed = json.loads((ROOT / "benchmarks/results/speed.json").read_text())
    (row,) = [
        r
        for r in speed["rows"]
        if (r["source"], r["model"], r["batch"], r["method"]) == ("torch", "resnet50", 1, "gradcam")
    ]
    expected = f"gradcam {hooks.ratio(row['ours'])} (pgc {hooks.ratio(row['pytorch-grad-cam'])})"
    assert expected in text
    paper = json.loads((ROOT / "benchmarks/results/paper_table.json").read_text())
    adcc = paper["methods"]["reciprocam"]["values"]["adcc"]
    assert f"{100 * adcc:.1f}" in text.split("The papers' table")[-1]
    assert "<!-- table:" not in (site / "methods" / "index.html").read_text()
