"""Every command's output: a bad --output is one line and exit code 1 before any work, and
files are written atomically (never half a file, even after SIGKILL)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from reciprocam import OutputError
from reciprocam.cli import main
from reciprocam.files import write_atomically


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "images" / "red.png")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf at all")
    return tmp_path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["explain", "images/red.png", "--model", "resnet18", "--output", "a_file"], "a_file: it"),
        (["evaluate", "--data", "images", "--model", "resnet18", "--output", "a_file"], "a_file"),
        (["export", "--model", "resnet18", "--output", "a_file/model.onnx"], "a_file: it is"),
        (["insert", "broken.onnx", "a_file/out.onnx"], "cannot write into a_file: it is a file"),
        (["demo", "--output", "a_file"], "cannot write into a_file: it is a file, not a folder"),
        (["insert", "missing.onnx", "out.onnx"], "no ONNX file at missing.onnx"),
        (["insert", "broken.onnx", "out.onnx"], "broken.onnx is not a valid ONNX model"),
        (["explain", "images/red.png", "--onnx", "missing.onnx"], "no ONNX file at missing.onnx"),
        (["explain", "images/red.png", "--onnx", "broken.onnx"], "is not a model onnxruntime"),
        (["export", "--model", "resnet19"], "unknown model 'resnet19'; did you mean resnet18"),
        (["export", "--model", "resnet18", "--checkpoint", "no.pt"], "no.pt: no such checkpoint"),
    ],
)
def test_every_command_s_mistakes_give_one_line_and_exit_code_1(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys, arguments: list[str], message: str
) -> None:
    monkeypatch.chdir(folder)
    before = sorted(folder.rglob("*"))
    assert main(arguments) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("reciprocam: error: ")
    assert message in lines[0]
    assert sorted(folder.rglob("*")) == before  # nothing written, not even a temporary file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "map.png"
    target.write_bytes(b"old")

    def half_then_fail(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*map.png: No space left on device"):
        write_atomically(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]
    write_atomically(target, lambda path: path.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


KILLED_WRITER = """
import sys, time
from pathlib import Path
from reciprocam.files import write_atomically

def slow(path):
    with open(path, "wb") as handle:
        handle.write(b"half of a PNG")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)

write_atomically(Path(sys.argv[1]), slow)
"""


def test_a_write_killed_halfway_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "overlay.png"
    target.write_bytes(b"the complete old file")
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(0.1)
    assert target.read_bytes() == b"the complete old file"
