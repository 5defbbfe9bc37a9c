"""`reciprocam explain --task detection` and the detection metrics, on the shipped Shapes
detector and hand-made maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from reciprocam.cli import main
from reciprocam.detection.metrics import (
    best_matching_score,
    box_regions,
    detection_auc,
    detection_curve,
    energy_pointing_game,
    pointing_game,
)
from reciprocam.synthetic.detection import ShapesDetection
from reciprocam.synthetic.detector import shapes_detector


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("detection-photos")
    data = ShapesDetection("test", 2, seed=1)
    for index in range(2):
        data.sample(index).image.save(folder / f"shape{index}.png")
    Image.new("RGB", (64, 48), (128, 128, 128)).save(folder / "blank.png")
    return folder, data


def run(capsys, *arguments):
    code = main([str(a) for a in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_explain_detection_writes_every_boxs_map(photos, tmp_path, capsys) -> None:
    folder, data = photos
    code, out, _ = run(
        capsys, "explain", "--task", "detection", folder, "--output", tmp_path, "--no-progress"
    )
    assert code == 0
    assert "blank.png: no detection scores >= 0.5 on this image" in out
    assert "nothing written" in out
    assert not list(tmp_path.glob("blank*"))
    rows = json.loads((tmp_path / "shape0_reciprocam_boxes.json").read_text())
    maps = np.load(tmp_path / "shape0_reciprocam.npy")
    assert maps.shape == (len(rows), 128, 128)
    assert maps.dtype == np.float32
    np.testing.assert_allclose(maps.reshape(len(rows), -1).max(1), 1.0)
    truth = data[0][1]
    assert sorted(r["label"] for r in rows) == sorted(truth["labels"].tolist())
    for index, row in enumerate(rows):
        assert (tmp_path / f"shape0_reciprocam_box{index}.png").is_file()
        assert row["score"] >= 0.5
    assert (tmp_path / "shape0_detections.png").is_file()
    assert (tmp_path / "shape0_reciprocam_grid.png").is_file()
    # The boxes file explains the same boxes again. A given box's class vector is one-hot
    # (a detection's is its own P), so the maps are close, not equal.
    again = tmp_path / "again"
    code, out, _ = run(
        capsys, "explain", "--task", "detection", folder / "shape0.png", "--boxes",
        tmp_path / "shape0_reciprocam_boxes.json", "--output", again, "--no-progress",
    )  # fmt: skip
    assert code == 0
    given = np.load(again / "shape0_reciprocam.npy")
    assert given.shape == maps.shape
    np.testing.assert_allclose(given, maps, atol=0.1)
    assert [r["box"] for r in json.loads((again / "shape0_reciprocam_boxes.json").read_text())] == [
        r["box"] for r in rows
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class", "2"], "--class does not apply to --task detection"),
        (["--method", "scorecam"], "scorecam has no detection counterpart"),
        (["--model", "fasterrcnn_resnet"], "unknown detector 'fasterrcnn_resnet'; did you mean"),
        (["--boxes", "missing.json"], "cannot read the boxes file"),
    ],
)
def test_detection_cli_errors_are_one_line(photos, tmp_path, capsys, extra, message) -> None:
    folder, _ = photos
    code, _, err = run(
        capsys,
        "explain",
        "--task",
        "detection",
        folder / "shape0.png",
        "--output",
        tmp_path,
        *extra,
    )
    assert code == 1
    assert message in err
    assert err.count("\n") == 1


def test_a_given_box_outside_the_photo_is_an_error(photos, tmp_path, capsys) -> None:
    folder, _ = photos
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"label": "disk", "box": [0, 0, 200, 20]}]))
    code, _, err = run(
        capsys,
        "explain",
        "--task",
        "detection",
        folder / "shape0.png",
        "--boxes",
        boxes,
        "--output",
        tmp_path / "o",
    )
    assert code == 1
    assert "is not inside the 128x128 image" in err


def test_pointing_games_by_hand() -> None:
    maps = torch.zeros(2, 4, 6)
    maps[0, 1, 2] = 1.0
    maps[0, 3, 5] = 1.0  # the mass is split half in, half out
    maps[1, 0, 0] = 1.0
    regions = box_regions(torch.tensor([[1.0, 0.0, 4.0, 2.0], [2.0, 2.0, 6.0, 4.0]]), (4, 6))
    assert regions[0].sum() == 6  # columns 1..3, rows 0..1
    assert bool(regions[0, 1, 3])
    assert not bool(regions[0, 2, 1])
    assert pointing_game(maps, regions).tolist() == [1.0, 0.0]
    assert energy_pointing_game(maps, regions).tolist() == [0.5, 0.0]


def test_best_matching_score_needs_the_label_and_half_overlap() -> None:
    detections = {
        "boxes": torch.tensor(
            [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.0], [0.0, 0.0, 10.0, 10.0]]
        ),
        "labels": torch.tensor([1, 2, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.3]),
    }
    box = torch.tensor([0.0, 0.0, 10.0, 9.0])
    assert best_matching_score(detections, box, 2) == pytest.approx(0.3)  # 0.8 has IoU 0.44
    assert best_matching_score(detections, box, 1) == pytest.approx(0.9)
    assert best_matching_score(detections, box, 3) == 0.0


def test_detection_deletion_and_insertion_curves_by_hand() -> None:
    model = shapes_detector()
    image, truth = ShapesDetection("test", 1, seed=1)[0]
    box, label = truth["boxes"][0], int(truth["labels"][0])
    saliency = box_regions(box[None], (128, 128))[0].float()
    deletion = detection_curve(model, image, saliency, box, label, mode="deletion", steps=2)
    insertion = detection_curve(model, image, saliency, box, label, mode="insertion", steps=2)
    with torch.no_grad():
        whole = best_matching_score(model([image])[0], box, label)
        mean = torch.tensor(model.transform.image_mean)[:, None, None].expand_as(image)
        emptied = best_matching_score(model([mean.clone()])[0], box, label)
    assert deletion[0] == pytest.approx(whole, abs=1e-6)
    assert deletion[2] == pytest.approx(emptied, abs=1e-6)
    assert insertion[2] == pytest.approx(whole, abs=1e-6)
    assert float(deletion[1]) < 0.5 * whole  # the box's own pixels, ranked first, are gone
    expected = (float(deletion.sum()) - (float(deletion[0]) + float(deletion[2])) / 2) / 2
    assert detection_auc(deletion) == pytest.approx(expected)
    assert detection_auc(deletion, normalised=True) == pytest.approx(expected / whole)
