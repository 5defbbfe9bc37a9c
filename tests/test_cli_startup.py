"""The command line answers at once: --help and a mistyped option import no torch, the names it
lists are the registries', and a run says what it loads before loading it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reciprocam
from reciprocam import names
from reciprocam.cli import main
from reciprocam.cli.app import MISSING_EXTRA

ROOT = Path(__file__).resolve().parents[1]

HEAVY = (
    "torch",
    "torchvision",
    "numpy",
    "matplotlib",
    "PIL",
    "tqdm",
    "gradio",
    "reciprocam.methods",
    "reciprocam.registry",
    "reciprocam.explainer",
    "reciprocam.zoo",
)
COMMANDS = ("explain", "evaluate", "export", "insert", "demo", "app")

# Runs the command line on its arguments; the last line of stdout is the exit code and the
# modules it imported.
PARSE_ONLY = """
import json, sys
from reciprocam.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def parse_only(*arguments: str) -> tuple[int, list[str], str]:
    """The exit code, the heavy modules imported, and stderr of `reciprocam ARGUMENTS`."""
    result = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    loaded = [name for name in HEAVY if name in report["modules"]]
    return report["code"], loaded, result.stderr


@pytest.mark.parametrize("command", [(), *((name,) for name in COMMANDS)])
def test_help_imports_no_torch(command: tuple[str, ...]) -> None:
    code, loaded, _ = parse_only(*command, "--help")
    assert code == 0
    assert loaded == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["explain", "x.jpg", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["explain", "x.jpg", "--task", "counting"], "argument --task: invalid choice"),
        (["explain", "x.jpg", "--batch-size", "ten"], "argument --batch-size: invalid"),
        (["explain", "x.jpg", "--method", "nomethod"], "unknown method 'nomethod'"),
        (["evaluate", "--data", "d", "--method-option", "rise"], "expected METHOD.NAME=VALUE"),
        (["evaluate"], "the following arguments are required: --data"),
        (["export", "--opset", "0"], "must be a positive integer"),
        (["insert", "in.onnx"], "the following arguments are required: OUTPUT"),
        (["demo", "--device"], "expected one argument"),
        (["app", "--port", "70000"], "must be a port from 1 to 65535"),
        (["explainn"], "invalid choice: 'explainn'"),
    ],
)
def test_a_usage_error_exits_with_2_and_imports_no_torch(
    arguments: list[str], message: str
) -> None:
    code, loaded, err = parse_only(*arguments)
    assert code == 2
    assert loaded == []
    assert message in err


@pytest.mark.parametrize(
    ("arguments", "message", "needed"),
    [
        (
            ["explain", "a.jpg", "b.mp4", "--model", "r3d_18"],
            "explain photos, or videos and volumes, in one run, not both (a.jpg is a photo",
            (),
        ),
        (["explain", "a.jpg", "--animation", "mp4"], "--animation applies to videos", ()),
        (["explain", "a.mp4", "--image-size", "64"], "--image-size does not apply to videos", ()),
        (
            ["explain", "a.jpg", "--task", "detection", "--top", "3"],
            "--top does not apply to --task detection",
            (),
        ),
        (["explain", "a.jpg", "--threshold", "0.5"], "--threshold applies to --task detection", ()),
        (
            ["explain", "a.jpg", "--onnx", "m.onnx", "--model", "resnet18"],
            "--model does not apply to --onnx",
            (),
        ),
        (  # the colormaps are matplotlib's: it loads, torch does not
            ["explain", "a.jpg", "--colormap", "nocolours"],
            "unknown matplotlib colormap 'nocolours'",
            ("numpy", "matplotlib", "PIL"),
        ),
    ],
)
def test_options_that_do_not_fit_are_refused_before_torch_loads(
    arguments: list[str], message: str, needed: tuple[str, ...]
) -> None:
    code, loaded, err = parse_only(*arguments, "--no-progress")
    assert code == 1
    assert set(loaded) <= set(needed)
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_the_light_names_are_the_registries() -> None:
    from reciprocam.metrics import metric_names
    from reciprocam.registry import detection_methods, methods

    assert tuple(methods()) == names.METHODS
    assert tuple(detection_methods()) == names.DETECTION_METHODS
    assert tuple(metric_names()) == names.METRICS


def test_import_reciprocam_is_lazy() -> None:
    script = (
        "import sys, reciprocam\n"
        "assert 'torch' not in sys.modules, 'import reciprocam loaded torch'\n"
        "print(reciprocam.__version__, 'torch' in sys.modules)\n"
        "import reciprocam.explainer\n"  # the submodule must not hide the function
        "from reciprocam import ReciproCAM, explainer\n"
        "print(ReciproCAM.__name__, explainer.__module__, reciprocam.methods.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == [
        reciprocam.__version__,
        "False",
        "ReciproCAM",
        "reciprocam.registry",
        "reciprocam.registry",
    ]


def test_every_public_name_resolves_and_is_listed() -> None:
    listed = dir(reciprocam)
    for name in reciprocam.__all__:
        assert name in listed
        assert getattr(reciprocam, name) is not None
    assert reciprocam.explainer is reciprocam.registry.explainer
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = reciprocam.Nothing


def test_the_lazy_names_are_the_type_checking_imports() -> None:
    """The lazy names' sources and the imports mypy and the API reference read agree."""
    tree = ast.parse((ROOT / "src" / "reciprocam" / "__init__.py").read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert {name: reciprocam._source(name) for name in imported} == imported
    eager = {name for name in reciprocam.__all__ if name in vars(reciprocam.errors)}
    assert set(reciprocam.__all__) == {*imported, *eager, "__version__"}


def test_the_app_command_calls_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    app = types.ModuleType("reciprocam.app")
    app.launch = lambda **options: calls.append(options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "reciprocam.app", app)
    assert main(["app", "--model", "resnet18", "--port", "8000"]) == 0
    assert (
        main(["app", "--model", "resnet50", "--checkpoint", "model.pt", "--host", "0.0.0.0"]) == 0
    )
    assert main(["app", "--checkpoint", "lite.pt"]) == 0  # a checkpoint of the demo model
    assert calls == [
        {"model": "resnet18", "checkpoint": None, "host": "127.0.0.1", "port": 8000},
        {"model": "resnet50", "checkpoint": Path("model.pt"), "host": "0.0.0.0", "port": None},
        {"model": None, "checkpoint": Path("lite.pt"), "host": "127.0.0.1", "port": None},
    ]


@pytest.mark.parametrize("missing", ["gradio", "reciprocam.app"])
def test_the_app_without_its_extra_says_how_to_install_it(missing: str) -> None:
    script = (
        f"import sys; sys.modules[{missing!r}] = None\n"  # None: the import fails
        "from reciprocam.cli import main\n"
        "sys.exit(main(['app']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"reciprocam: error: {MISSING_EXTRA}"


# Runs the command line with stdout and stderr as a terminal that records each write, and
# whether torch was loaded by then.
RECORDED = """
import json, sys

class Terminal:
    def __init__(self, name):
        self.name = name
    def write(self, text):
        if text.strip():
            log.append([self.name, text.strip(), "torch" in sys.modules])
        return len(text)
    def flush(self):
        pass
    def isatty(self):
        return True

log = []
sys.stdout, sys.stderr = Terminal("stdout"), Terminal("stderr")
from reciprocam.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "log": log}), file=sys.__stdout__)
"""


def run_on_a_terminal(*arguments: object) -> list[tuple[str, str, bool]]:
    result = subprocess.run(
        [sys.executable, "-c", RECORDED, *map(str, arguments)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    assert report["code"] == 0, report
    return [tuple(entry) for entry in report["log"]]


def test_a_run_says_what_it_loads_before_loading_it(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 128, dtype=np.uint8)).save(photo)
    common = [photo, "--model", "resnet18", "--image-size", 32, "--device", "cpu"]
    log = run_on_a_terminal("explain", *common, "--output", tmp_path / "out")
    assert log[0] == ("stderr", "reciprocam: loading torch and the model...", False)
    output = [index for index, (stream, _, _) in enumerate(log) if stream == "stdout"]
    assert output
    assert output[0] > 0
    assert log[output[0]][1].startswith("photo.png: ")
    quiet = run_on_a_terminal("explain", *common, "--output", tmp_path / "quiet", "--no-progress")
    assert all("loading" not in text for _, text, _ in quiet)


def test_no_status_line_off_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal (a pipe, a log, these tests), stderr holds only what went wrong."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photo)
    arguments = [str(photo), "--device", "tpu", "--output", str(tmp_path)]
    assert main(["explain", *arguments]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reciprocam: error: ")
    assert "'tpu'" in err
