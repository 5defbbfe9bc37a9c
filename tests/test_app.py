"""`reciprocam app` without a browser: the launch line, the helpers behind the page."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from helpers import GRADIO_QUEUE_WARNINGS, forwards_under_the_lock, shapes_page_model
from PIL import Image

from reciprocam.app import binding_message, build_app, launch
from reciprocam.app import explore as explore_module
from reciprocam.app.explore import Explorer, Models, Settings
from reciprocam.app.loaded import LoadedOnce
from reciprocam.app.pictures import GRID_SIDE, curves_figure, grid_picture
from reciprocam.errors import ImageError, LayerError, ModelError
from reciprocam.metrics import Deletion
from reciprocam.photos import ExplainedPhoto, explain_photos
from reciprocam.registry import explainer
from reciprocam.synthetic.models import shapes_model
from reciprocam.synthetic.shapes import CLASSES, SIZE, render
from reciprocam.targets import Region
from reciprocam.visualize import overlay
from reciprocam.zoo import LoadedModel, load_model

CPU = torch.device("cpu")
pytestmark = GRADIO_QUEUE_WARNINGS


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return shapes_page_model("cnn")


@pytest.fixture(scope="module")
def explorer(loaded: LoadedModel) -> Explorer:
    return Explorer(loaded, CPU)


@pytest.fixture
def photo(tmp_path: Path) -> tuple[Path, int]:
    sample = render(0, 1)
    path = tmp_path / "cross.png"
    sample.image.save(path)
    return path, sample.label


def test_the_binding_message_says_who_can_reach_the_page() -> None:
    local = binding_message("http://127.0.0.1:7860/", "127.0.0.1")
    assert local.startswith("reciprocam app: serving on http://127.0.0.1:7860/ (")
    assert "only this machine can reach it" in local
    exposed = binding_message("http://localhost:7860/", "0.0.0.0")
    assert "bound to 0.0.0.0: other machines on the network can reach it" in exposed
    assert "only this machine" not in exposed


def test_launch_loads_the_model_once_binds_to_loopback_and_prints_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], loaded: LoadedModel
) -> None:
    asked = []

    def fake_load(name: str | None, *, checkpoint: Path | None = None) -> LoadedModel:
        asked.append((name, checkpoint))
        return loaded

    served: list[gr.Blocks] = []
    monkeypatch.setattr(explore_module, "load_model", fake_load)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: served.append(self))
    launch(model="shapes_cnn", checkpoint=None, port=None)
    [app] = served
    try:
        assert asked == [("shapes_cnn", None)]
        [line] = capsys.readouterr().out.strip().splitlines()
        found = re.match(r"reciprocam app: serving on (http://127\.0\.0\.1:(\d+)/) \(only", line)
        assert found is not None, line
        assert app.server_name == "127.0.0.1"
        assert not app.share
        assert not app.analytics_enabled
        with urllib.request.urlopen(found.group(1), timeout=30) as response:
            assert response.status == 200
            assert b"reciprocam app" in response.read()
    finally:
        app.close()


def test_build_app_takes_a_model_name() -> None:
    app = build_app("shapes_segmenter")
    assert isinstance(app, gr.Blocks)
    assert app.title == "reciprocam app"


def test_the_layer_choices_are_the_spatial_layers_with_their_grids(explorer: Explorer) -> None:
    layers = dict(explorer.layers)
    assert layers["layer3 (8x8)"] == "layer3"
    assert layers["layer2 (16x16)"] == "layer2"
    assert layers["stem (32x32)"] == "stem"
    names = list(layers.values())
    assert "pool" not in names  # 1x1: the head's pooling is no target
    assert "fc" not in names
    assert names.index("layer2") < names.index("layer3")  # in the order the calls finish


def test_predict_gives_the_top_classes_and_refuses_what_is_no_photo(
    explorer: Explorer, loaded: LoadedModel, photo: tuple[Path, int], tmp_path: Path
) -> None:
    path, label = photo
    image, top = explorer.predict(path)
    assert image.size == (SIZE, SIZE)
    x = loaded.preprocessing(image)[0][None]
    with torch.no_grad():
        probabilities = loaded.model(x).softmax(dim=1)[0]
    assert [p.index for p in top] == probabilities.argsort(descending=True).tolist()
    assert top[0].index == label
    assert top[0].probability == pytest.approx(float(probabilities[label]), abs=1e-6)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not an image file"):
        explorer.predict(text)


def test_an_explanation_is_what_reciprocam_explain_writes(
    explorer: Explorer, loaded: LoadedModel, photo: tuple[Path, int], tmp_path: Path
) -> None:
    path, label = photo
    result = explorer.explain(path, "reciprocam", label, Settings(), tmp_path / "app")
    with explainer("reciprocam", loaded.model) as method:
        [expected] = explain_photos(
            [path],
            method,
            tmp_path / "library",
            preprocessing=loaded.preprocessing,
            categories=loaded.categories,
            method="reciprocam",
            device=CPU,
            target=label,
        )
    assert isinstance(expected, ExplainedPhoto)
    [ours] = expected.maps
    assert np.array_equal(np.asarray(result.explained.overlay), np.asarray(ours.overlay))
    assert result.explained.overlay_path.read_bytes() == ours.overlay_path.read_bytes()
    assert np.array_equal(np.load(result.explained.map_path), np.load(ours.map_path))
    assert result.explained.target == ours.target
    assert result.grid.shape == (8, 8)  # layer3's grid
    assert result.seconds > 0
    x = loaded.preprocessing(expected.photo)[0][None]
    [auc] = Deletion(loaded.model).update(x, ours.saliency[None], label)
    assert result.deletion is not None
    assert result.insertion is not None
    assert result.deletion.auc == pytest.approx(float(auc), abs=1e-6)
    assert result.deletion.fractions[0] == 0
    assert result.deletion.fractions[-1] == 1
    assert result.insertion.auc > result.deletion.auc  # a faithful map of a confident class


def test_requests_run_the_model_under_its_lock(
    explorer: Explorer, photo: tuple[Path, int], tmp_path: Path
) -> None:
    # The library's model_lock, which explanations take too: a forward pass in another
    # thread would run through an explanation's hooks.
    path, label = photo
    model = explorer.loaded.model
    assert forwards_under_the_lock(model, lambda: explorer.predict(path)) == [True]
    held = forwards_under_the_lock(
        model, lambda: explorer.explain(path, "gradcam", label, Settings(), tmp_path)
    )
    assert len(held) > 2  # the explanation, and the curves' passes
    assert all(held)


def test_options_reach_the_methods_that_take_them(
    explorer: Explorer, photo: tuple[Path, int], tmp_path: Path
) -> None:
    path, label = photo
    settings = Settings(layer="layer2", mask="gaussian", score="logit", curves=False)
    result = explorer.explain(path, "reciprocam", label, settings, tmp_path)
    assert result.grid.shape == (16, 16)
    assert result.deletion is None
    assert result.insertion is None
    key = ("reciprocam", settings.layer, settings.mask, settings.score)
    built = explorer._explainers[key]
    assert (built.mask, built.score) == ("gaussian", "logit")  # type: ignore[attr-defined]
    assert explorer._explainers[key] is built  # built once, then reused
    gradcam = explorer.explain(path, "gradcam", label, settings, tmp_path)  # no mask or score
    assert gradcam.grid.shape == (16, 16)
    with pytest.raises(LayerError, match="bypassed"):
        explorer.explain(path, "reciprocam", label, Settings(layer="layer3.conv1"), tmp_path)


def test_a_segmenter_explains_the_region_of_a_class(tmp_path: Path) -> None:
    explorer = Explorer(load_model("shapes_segmenter"), CPU)
    assert explorer.segmenter
    path = tmp_path / "shapes.png"
    render(0, 2).image.save(path)
    _, top = explorer.predict(path)
    shape = next(p for p in top if p.index != 0)  # a predicted class other than background
    assert isinstance(explorer.target(shape.index), Region)
    result = explorer.explain(path, "reciprocam", shape.index, Settings(curves=False), tmp_path)
    assert result.explained.target.index == shape.index
    pixels = np.asarray(result.explained.overlay)
    assert (pixels == 255).all(axis=-1).any()  # the region's white outline


def test_the_raw_grid_is_one_block_of_the_overlays_colours_per_cell() -> None:
    grid = torch.rand(8, 8)
    picture = grid_picture(grid)
    assert picture.size == (GRID_SIDE, GRID_SIDE)
    cells = overlay(Image.new("RGB", (8, 8)), grid, alpha=1.0)
    expected = np.repeat(np.repeat(np.asarray(cells), 32, axis=0), 32, axis=1)
    assert np.array_equal(np.asarray(picture), expected)
    assert grid_picture(torch.rand(300, 200)).size == (200, 300)  # never shrunk


def test_the_curves_figure_has_each_methods_auc(
    explorer: Explorer, photo: tuple[Path, int], tmp_path: Path
) -> None:
    path, label = photo
    results = [explorer.explain(path, m, label, Settings(), tmp_path) for m in ("cam", "gradcam")]
    figure = curves_figure(results)
    deletion, insertion = figure.axes
    assert [t.get_text() for t in deletion.get_legend().get_texts()] == [
        f"{r.method} (AUC {r.deletion.auc:.3f})"  # type: ignore[union-attr]
        for r in results
    ]
    assert len(insertion.get_lines()) == 2


def test_models_load_once_when_chosen_and_keep_the_latest(loaded: LoadedModel) -> None:
    def named(name: str) -> LoadedModel:
        return LoadedModel(name, shapes_model("cnn"), loaded.preprocessing, CLASSES, True)

    first, second, third = named("a"), named("b"), named("c")
    models = Models(loaded, None, [first, second, third, loaded], torch.device("cpu"), kept=1)
    assert models.names == [loaded.name, "a", "b", "c"]  # the page's own is not listed twice
    assert models[""] is models[loaded.name]
    assert models[""].loaded is loaded
    chosen = models["a"]
    assert chosen.loaded is first
    assert models["a"] is chosen  # loaded once
    assert models["b"].loaded is second
    assert models["a"] is not chosen  # dropped for "b" (kept=1), loaded again
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        models["nope"]


def test_what_is_dropped_from_a_full_cache_is_handed_over_to_close() -> None:
    loads: list[str] = []
    dropped: list[str] = []

    def load(key: str) -> str:
        loads.append(key)
        return key.upper()

    cache = LoadedOnce(load, kept=2, permanent={"p": None}, drop=dropped.append)
    assert [cache[k] for k in ("a", "b", "a", "c", "p", "p")] == ["A", "B", "A", "C", "P", "P"]
    assert loads == ["a", "b", "c", "p"]  # each once; "p" when first asked for
    assert dropped == ["B"]  # "a" was asked for after "b", so "b" went first
