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


# The README's `##` and `###` sections before it became a five-minute read (issue 19), with the
# docs page that holds each one now (every one moved there verbatim, or stayed in the README).
OLD_README_SECTIONS = {
    "Five minutes: from install to your own model": "README.md",
    "Use it from Python": "docs/python.md",
    "The baseline methods": "docs/baselines.md",
    "Explain any output: classes, several labels, segmentation regions, embeddings": (
        "docs/targets.md"
    ),
    "Explain a detector's boxes: one map per box, from one batch": "docs/detection.md",
    "Explain a video or a volume: maps over time and depth": "docs/video.md",
    "Use it from the command line": "docs/cli.md",
    "Deploy: explanations in ONNX": "docs/onnx.md",
    "Evaluate explanations: the papers' metrics": "docs/evaluation.md",
    "`reciprocam evaluate`": "docs/evaluation.md",
    "How it works, and where the choices come from": "docs/how-it-works.md",
    "Every classifier users bring: the zoo": "docs/zoo.md",
    "How it is checked": "docs/checks.md",
    "Speed": "docs/speed.md",
    "Benchmarks": "docs/benchmarks.md",
    "Where the maps point: the Shapes localisation benchmark": "docs/benchmarks.md",
    "Where the maps of a segmenter point: Shapes segmentation": "docs/benchmarks.md",
    "Where the maps of a detector's boxes point: Shapes detection": "docs/benchmarks.md",
    "The papers' table on real photos": "docs/benchmarks.md",
    "Development": "docs/development.md",
}
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    """The README and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def headings(path: Path) -> list[str]:
    """The headings of a Markdown file, as written (code blocks left out)."""
    text = FENCE.sub("", path.read_text())
    return re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.MULTILINE)


def links(path: Path) -> list[str]:
    """The targets of a Markdown file's links and images (code left out)."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text)


def site_page(site: Path, path: Path) -> Path:
    """The built HTML of the repository's Markdown file `path` (the README is the guide)."""
    if path == ROOT / "README.md":
        return site / "guide" / "index.html"
    page = path.relative_to(ROOT / "docs").with_suffix("")
    return site / ("index.html" if page.name == "index" else page / "index.html")


def test_the_readme_is_a_five_minute_read() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    assert readme.startswith(
        '# reciprocam\n\n```bash\npip install ".[demo]" && reciprocam demo\n'
        'pip install -e ".[dev,demo]" && pytest\n```\n'
    )
    assert "![" in readme, "the README shows a picture"


def test_every_old_readme_section_is_still_there_or_linked() -> None:
    readme = ROOT / "README.md"
    kept = headings(readme)
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(readme)}
    for title, page in OLD_README_SECTIONS.items():
        if title in kept:
            continue
        path = (ROOT / page).resolve()
        assert path in linked, f"the README does not link {page}, where '{title}' went"
        assert title in headings(path), f"'{title}' is neither in the README nor in {page}"


def test_every_relative_link_resolves(site: Path) -> None:
    for path in markdown_files():
        for target in links(path):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            assert not target.startswith("/"), f"{path}: {target} is absolute"
            file, _, anchor = target.partition("#")
            found = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}: {target}"
            assert found.exists(), f"{where}: no such file"
            if anchor and found.suffix == ".md":
                built = site_page(site, found).read_text()
                assert f'id="{anchor}"' in built, f"{where}: no heading with that anchor"


def test_links_are_rewritten_for_the_site(hooks: ModuleType) -> None:
    def site_link(page: str, markdown: str) -> str:
        match = hooks.RELATIVE_LINK.search(markdown)
        assert match is not None
        return str(hooks.site_link(page, match))

    assert site_link("guide.md", "[a](docs/methods.md#speed)") == "[a](methods.md#speed)"
    assert site_link("guide.md", "[a](docs/api/onnx.md)") == "[a](api/onnx.md)"
    assert site_link("guide.md", "[a](examples/)") == "a"
    plot = "![p](benchmarks/results/speed.png)"
    assert site_link("guide.md", plot) == plot
    assert site_link("speed.md", "![p](../benchmarks/results/speed.png)") == plot
    assert site_link("index.md", "[g](../README.md)") == "[g](guide.md)"
    assert site_link("api/onnx.md", "[g](../../README.md#speed)") == "[g](../guide.md#speed)"
    assert site_link("api/onnx.md", "[m](../methods.md)") == "[m](../methods.md)"
