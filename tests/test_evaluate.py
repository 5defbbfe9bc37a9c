"""`reciprocam evaluate`: values, outputs, resuming after interruptions, torchrun, mistakes.

The runs use a random-weight ResNet-18 checkpoint at 32 x 32 inputs on a handful of random
images, so a whole evaluation takes seconds.
"""

from __future__ import annotations

import csv
import html
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build
from PIL import Image

from reciprocam.cli import main
from reciprocam.evaluation import GroundTruth, Sample, read_dataset
from reciprocam.images import load_image
from reciprocam.metrics import MetricOptions, MetricSuite, boxes_to_mask, summarize
from reciprocam.registry import explainer as build_explainer
from reciprocam.zoo import Preprocessing, load_model

SIZE = 64  # a 2 x 2 map on ResNet-18's layer4
STEPS = 16
# Deletion/Insertion rank pixels, and an ulp of rounding (CPU kernels round differently with
# the thread count or memory alignment) can reorder two pixels a step boundary separates.
TOLERANCE = {"deletion": 1e-3, "insertion": 1e-3}
CLASSES = ("apple", "pear", "plum")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders (a digit, a class name, an unknown name), a loose image, a broken file,
    boxes, and a 3-class ResNet-18 checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    data = root / "data"
    for folder, count in (("2", 2), ("pear", 2), ("zebra", 1)):
        (data / folder).mkdir(parents=True)
        for number in range(count):
            pixels = rng.integers(0, 255, (48 + 8 * number, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / folder / f"image{number}.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / "loose.jpg")
    (data / "pear" / "broken.jpg").write_bytes(b"not a picture")
    boxes = {"2/image0.png": [[0, 0, 20, 30]], "pear/image1.png": [[5, 5, 39, 50]]}
    (root / "boxes.json").write_text(json.dumps(boxes))
    torch.save(build("resnet18", num_classes=3).state_dict(), root / "model.pt")
    return root


def arguments(root: Path, output: Path, *extra: object) -> list[str]:
    return [
        str(a)
        for a in (
            "evaluate",
            "--data",
            root / "data",
            "--model",
            "resnet18",
            "--checkpoint",
            root / "model.pt",
            "--image-size",
            SIZE,
            "--steps",
            STEPS,
            "--device",
            "cpu",
            "--output",
            output,
            "--no-progress",
            *extra,
        )
    ]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


def rows(output: Path) -> list[tuple]:
    with sqlite3.connect(output / "evaluation.sqlite") as connection:
        return connection.execute(
            "SELECT image, method, target, metrics FROM results ORDER BY image, method"
        ).fetchall()


def assert_same_rows(found: list[tuple], expected: list[tuple]) -> None:
    """The same (image, method, target) rows with the same values up to float rounding."""
    assert [row[:3] for row in found] == [row[:3] for row in expected]
    for row, reference in zip(found, expected, strict=True):
        values, reference_values = json.loads(row[3]), json.loads(reference[3])
        assert values.keys() == reference_values.keys()
        for name, value in reference_values.items():
            close = pytest.approx(value, abs=TOLERANCE.get(name, 1e-5), nan_ok=True)
            assert values[name] == close, (row[:2], name)


@pytest.fixture(scope="module")
def evaluated(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run") / "out"
    code = main(
        arguments(
            dataset, output, "--methods", "reciprocam,gradcam", "--boxes", dataset / "boxes.json"
        )
    )
    assert code == 0
    return output


def test_the_summary_equals_the_library_on_the_same_images(dataset: Path, evaluated: Path) -> None:
    loaded = load_model("resnet18", checkpoint=dataset / "model.pt")
    preprocessing = Preprocessing(resize=73, crop=SIZE)  # 256/224 of 64, as the model's
    samples = [
        s for s in read_dataset(dataset / "data", loaded.categories) if "broken" not in s.key
    ]
    images = torch.stack([preprocessing(load_image(s.path))[0] for s in samples])
    truth = GroundTruth.read_boxes(dataset / "boxes.json", loaded.categories)
    for method in ("reciprocam", "gradcam"):
        with build_explainer(method, loaded.model) as explainer:
            suite = MetricSuite("all", explainer=explainer, options=MetricOptions(steps=STEPS))
            for sample, image in zip(samples, images, strict=True):  # one at a time, as the CLI
                explanation = explainer.explain(image[None])
                target = int(explanation.targets[0])
                mask = truth.mask(sample, load_image(sample.path).size, target, preprocessing)
                objects = (
                    torch.zeros(1, SIZE, SIZE, dtype=torch.bool) if mask is None else mask[None]
                )
                suite.update(image[None], explanation.maps, explanation.targets, objects)
        expected = summarize(suite.values())
        found = summary(evaluated)["methods"][method]
        assert found["images"] == len(samples) == 6
        for name, value in expected.items():
            assert found["values"][name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
    # Two images have boxes, so the pointing games average over at most two.
    assert sum(s.key in ("2/image0.png", "pear/image1.png") for s in samples) == 2


def test_the_table_files_agree_and_mark_the_best(evaluated: Path) -> None:
    document = summary(evaluated)
    assert document["metrics"]["deletion"] == {"label": "Del", "higher_is_better": False}
    assert document["run"]["model"]["name"] == "resnet18"
    with (evaluated / "summary.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table] == ["reciprocam", "gradcam"]
    for row in table:
        values = document["methods"][row["method"]]["values"]
        assert float(row["adcc"]) == pytest.approx(100 * values["adcc"])
        assert float(row["adcc_mean_of_images"]) == pytest.approx(
            100 * values["adcc_mean_of_images"]
        )
    markdown = (evaluated / "summary.md").read_text()
    header = markdown.splitlines()[0]
    assert header.startswith(
        "| Method | Drop\u2193 | Inc\u2191 | Del\u2193 | Ins\u2191 | Coher\u2191"
    )
    deletions = {m: v["values"]["deletion"] for m, v in document["methods"].items()}
    best = min(deletions, key=deletions.get)
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {best} |"))
    assert f"**{100 * deletions[best]:.2f}**" in line


def test_the_html_report_shows_the_table_curves_overlays_and_skips(evaluated: Path) -> None:
    report = (evaluated / "report.html").read_text()
    assert "<table>" in report
    assert "ADCC" in report
    with sqlite3.connect(evaluated / "evaluation.sqlite") as connection:
        (reason,) = connection.execute("SELECT reason FROM skipped").fetchone()
    assert f"<li>pear/broken.jpg: {html.escape(reason)}</li>" in report
    pictures = [part.split("'")[0] for part in report.split("src='")[1:]]
    assert "report/curves.png" in pictures
    assert sum(p.endswith("-reciprocam.png") for p in pictures) == 6
    for picture in pictures:
        assert Image.open(evaluated / picture).size[0] > 0


def test_skipped_images_are_recorded_with_the_reason(evaluated: Path) -> None:
    with sqlite3.connect(evaluated / "evaluation.sqlite") as connection:
        skipped = connection.execute("SELECT image, reason FROM skipped").fetchall()
    assert [image for image, _ in skipped] == ["pear/broken.jpg"]
    assert "broken.jpg" in skipped[0][1]


def test_a_rerun_resumes_without_duplicates(dataset: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out"
    args = arguments(dataset, output, "--methods", "reciprocam,gradcam", "--metrics", "paper")
    assert run(capsys, *args)[0] == 0
    complete = rows(output)
    assert len(complete) == 12
    kept = "SELECT image, method, seconds FROM results WHERE image NOT LIKE 'pear/%'"
    with sqlite3.connect(output / "evaluation.sqlite") as connection:
        connection.execute("DELETE FROM results WHERE image LIKE 'pear/%' OR method = 'gradcam'")
        untouched = connection.execute(kept).fetchall()
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert_same_rows(rows(output), complete)
    with sqlite3.connect(output / "evaluation.sqlite") as connection:
        assert set(untouched) <= set(connection.execute(kept).fetchall())  # not redone
    assert "evaluated 6 of 7 images" in out


def wait_for_rows(database: Path, process: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists():
            try:
                with sqlite3.connect(database, timeout=1) as connection:
                    if connection.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= count:
                        return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("the run wrote no rows in time")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_run_loses_nothing_committed_and_resumes(
    dataset: Path, evaluated: Path, tmp_path: Path, capsys, stop: signal.Signals
) -> None:
    output = tmp_path / "out"
    args = arguments(
        dataset, output, "--methods", "reciprocam,gradcam", "--boxes", dataset / "boxes.json"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "reciprocam", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_rows(output / "evaluation.sqlite", process, 2)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    partial = rows(output)
    if stop == signal.SIGINT and process.returncode != 0:
        assert process.returncode == 130
        assert b"Traceback" not in err
        saved = f"{len(partial)} of 14 explanations are saved in {output}; rerun the same command"
        assert saved.encode() in err
    assert len(partial) >= 2
    code, _, err = run(capsys, *args)
    assert code == 0
    assert f"resuming: {len(partial)} of 14 explanations are already in {output}" in err
    assert_same_rows(rows(output), rows(evaluated))


def test_torchrun_with_two_processes_equals_one(
    dataset: Path, evaluated: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    args = arguments(
        dataset, output, "--methods", "reciprocam,gradcam", "--boxes", dataset / "boxes.json"
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "reciprocam",
        *args,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "evaluated 6 of 7 images" in finished.stdout
    assert summary(evaluated)["run"] == summary(output)["run"]
    assert_same_rows(rows(output), rows(evaluated))


def test_a_different_run_in_the_same_folder_is_refused(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "out"
    assert run(capsys, *arguments(dataset, output, "--metrics", "complexity"))[0] == 0
    changed = arguments(dataset, output, "--metrics", "complexity", "--substrate", "blur")
    code, _, err = run(capsys, *changed)
    assert code == 1
    assert "holds the results of a different run (options.substrate differ)" in err
    assert len(err.strip().splitlines()) == 1


def test_method_options_reach_the_explainer_and_belong_to_the_run(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "out"
    gaussian = ("--metrics", "complexity", "--method-option", "reciprocam.mask=gaussian")
    assert run(capsys, *arguments(dataset, output, *gaussian))[0] == 0
    assert summary(output)["run"]["method_options"] == {"reciprocam": {"mask": "gaussian"}}
    loaded = load_model("resnet18", checkpoint=dataset / "model.pt")
    image = Preprocessing(resize=73, crop=SIZE)(load_image(dataset / "data" / "loose.jpg"))[0]
    stored = {key: json.loads(values) for key, _, _, values in rows(output)}
    for mask, expected_equal in (("gaussian", True), ("pixel", False)):
        with build_explainer("reciprocam", loaded.model, mask=mask) as explainer:
            complexity = float(explainer.explain(image[None]).maps.mean())
        close = stored["loose.jpg"]["complexity"] == pytest.approx(complexity, abs=1e-6)
        assert close == expected_equal, mask
    code, _, err = run(capsys, *arguments(dataset, output, *gaussian[:-1], "reciprocam.mask=pixel"))
    assert code == 1
    assert "(method_options.reciprocam.mask differ)" in err
    with pytest.raises(SystemExit) as exited:
        main(arguments(dataset, output, "--method-option", "rise"))
    assert exited.value.code == 2
    assert "expected METHOD.NAME=VALUE, e.g. rise.masks=1000, not 'rise'" in capsys.readouterr().err


def test_target_label_explains_the_folder_classes(dataset: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out"
    code, _, _err = run(
        capsys, *arguments(dataset, output, "--metrics", "complexity", "--target", "label")
    )
    assert code == 0
    targets = {image: target for image, _, target, _ in rows(output)}
    # "2" is class 2, "pear" is the model's... no names, so its sorted position (1); zebra: 2.
    assert targets == {
        "2/image0.png": 2,
        "2/image1.png": 2,
        "pear/image0.png": 1,
        "pear/image1.png": 1,
        "zebra/image0.png": 2,
    }
    with sqlite3.connect(output / "evaluation.sqlite") as connection:
        reasons = dict(connection.execute("SELECT image, reason FROM skipped").fetchall())
    assert "no label" in reasons["loose.jpg"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "gradcam,fastcam"], "unknown method 'fastcam'"),
        (["--metrics", "drop,iou"], "unknown metric 'iou'"),
        (["--metrics", "pointing_game"], "pointing_game needs ground truth; give --boxes"),
        (["--boxes", "missing.json"], "cannot read the boxes"),
        (["--boxes", "elsewhere.json"], "its keys must be paths relative to --data, such as '2/"),
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--method-option", "rise.masks=10"], "rise is not among --methods (reciprocam)"),
        (["--method-option", "reciprocam.masks=10"], "reciprocam takes no option 'masks'"),
        (["--method-option", "reciprocam.batch_size=-1"], "batch_size must be a positive"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code_1(
    dataset: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    (tmp_path / "elsewhere.json").write_text('{"other/image.png": [[0, 0, 1, 1]]}')
    extra = [str(tmp_path / e) if e.endswith(".json") else e for e in extra]
    args = arguments(dataset, tmp_path / "out", *extra)
    if "--model" in extra:  # the checkpoint is for resnet18
        args = args[:5] + args[9:]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_an_empty_dataset_and_a_foreign_database(dataset: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = arguments(dataset, tmp_path / "out", "--metrics", "complexity")
    args[args.index("--data") + 1] = str(empty)
    code, _, err = run(capsys, *args)
    assert code == 1
    assert "the dataset holds no images" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "evaluation.sqlite").write_bytes(b"this is not a database, just some text " * 50)
    code, _, err = run(capsys, *arguments(dataset, foreign, "--metrics", "complexity"))
    assert code == 1
    assert "not a usable evaluation database" in err


def test_a_file_list_with_labels_and_comments(dataset: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# images\n{dataset / 'data' / 'loose.jpg'} 1\n\n"
        f"{dataset / 'data' / '2' / 'image0.png'}   plum  # a class name\n"
    )
    samples = read_dataset(listing, CLASSES)
    assert [(Path(s.key).name, s.label) for s in samples] == [("image0.png", 2), ("loose.jpg", 1)]


def test_class_folder_labels(dataset: Path) -> None:
    samples = read_dataset(dataset / "data", CLASSES)
    labels = {s.key: s.label for s in samples}
    # "2": the index; "pear": the class name; "zebra": its place among the sorted folders.
    assert labels["2/image0.png"] == 2
    assert labels["pear/image0.png"] == 1
    assert labels["zebra/image0.png"] == 2
    assert labels["loose.jpg"] is None


def test_ground_truth_follows_the_preprocessing_geometry(tmp_path: Path) -> None:
    photo = Image.new("RGB", (64, 64))
    sample = Sample("photo.png", tmp_path / "photo.png")
    boxes = GroundTruth(boxes={"photo.png": {1: [[32, 0, 63, 63]]}})
    # No crop: the right half of the 32 x 32 input.
    mask = boxes.mask(sample, photo.size, 1, Preprocessing(resize=32, crop=32))
    assert torch.equal(mask, boxes_to_mask([(16, 0, 31, 31)], (32, 32)))
    # The centre 32 x 32 of the photo: its columns 32..47 are the input's 16..31.
    mask = boxes.mask(sample, photo.size, 1, Preprocessing(resize=64, crop=32))
    assert torch.equal(mask, boxes_to_mask([(16, 0, 31, 31)], (32, 32)))
    assert boxes.mask(sample, photo.size, 0, Preprocessing(resize=32, crop=32)) is None
    masks = tmp_path / "masks"
    masks.mkdir()
    drawn = np.zeros((64, 64), dtype=np.uint8)
    drawn[:, 32:] = 255
    Image.fromarray(drawn).save(masks / "photo.png")
    found = GroundTruth.mask_folder(masks).mask(
        sample, photo.size, 0, Preprocessing(resize=32, crop=32)
    )
    assert torch.equal(found, boxes_to_mask([(16, 0, 31, 31)], (32, 32)))


def test_segmentation_scores_each_class_region_of_the_shapes_set(tmp_path: Path, capsys) -> None:
    """`--task segmentation` on Shapes segmentation images and their label masks, with the
    shipped segmenter: one row per class an image shows, its metrics on the region's score."""
    from reciprocam.metrics import AverageDrop, PointingGame
    from reciprocam.synthetic.segmentation import render_segmentation
    from reciprocam.targets import Region

    data, masks = tmp_path / "data", tmp_path / "masks"
    data.mkdir()
    masks.mkdir()
    drawn = [render_segmentation(5, index) for index in range(3)]
    for index, sample in enumerate(drawn):
        sample.image.save(data / f"{index}.png")
        Image.fromarray(sample.mask.astype(np.uint8)).save(masks / f"{index}.png")
    output = tmp_path / "out"
    code, _, err = run(
        capsys, *(str(a) for a in (
            "evaluate", "--data", data, "--masks", masks, "--task", "segmentation", "--model",
            "shapes_segmenter", "--methods", "reciprocam", "--metrics",
            "drop,deletion,pointing_game", "--steps", 4, "--device", "cpu", "--output", output,
            "--no-progress",
        )),
    )  # fmt: skip
    assert code == 0, err
    found = rows(output)
    expected_keys = sorted(
        f"{index}.png#{cls + 1}" for index, sample in enumerate(drawn) for cls in sample.classes
    )
    assert [row[0] for row in found] == expected_keys
    loaded = load_model("shapes_segmenter")
    explainer = build_explainer("reciprocam", loaded.model)
    for key, _, target, values in found:
        name, cls = key.split("#")
        sample = drawn[int(name.split(".")[0])]
        x = loaded.preprocessing(sample.image)[0][None]
        region = torch.from_numpy(sample.mask == int(cls))[None]
        explanation = explainer.explain(x, Region(int(cls), region=region))
        metrics = json.loads(values)
        drop = AverageDrop(loaded.model).update(x, explanation.maps, explanation.target)
        hit = PointingGame().update(x, explanation.maps, None, region)
        assert target == int(cls)
        assert metrics["average_drop"] == pytest.approx(drop.item(), abs=1e-5)
        assert metrics["pointing_game"] == pytest.approx(hit.item())
