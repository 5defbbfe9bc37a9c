"""The ReciproCAM papers' table on real data: every method, the real EfficientNet-Lite0, the 20
labelled ImageNet photos that install offline (foolbox's), through `reciprocam evaluate`.

    python benchmarks/paper_table.py [--output DIR] [--photos N] [`reciprocam evaluate` options]

The run is resumable (rerun the same command after an interruption). It writes the summary
with the machine to benchmarks/results/paper_table.json and prints the Markdown table beside
the paper's ReciproCAM rows (other backbones: their ordering, not their values, compares).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

from common import write_results

from reciprocam.cli import main as reciprocam

HERE = Path(__file__).resolve().parent
# The papers' ReciproCAM rows (Drop, Inc, Del, Ins, Coher, Compl, ADCC), for the docs table.
PAPER = {
    "ResNet-50": (15.69, 40.54, 13.34, 55.39, 96.68, 32.90, 80.84),
    "VGG-16": (21.51, 34.86, 9.50, 46.88, 92.24, 27.48, 80.27),
}


def foolbox_photos(folder: Path, count: int) -> Path:
    """A `PATH LABEL` list of the first `count` of foolbox's imagenet_NN_LABEL.jpg photos."""
    files = importlib.metadata.distribution("foolbox").files or []
    photos = sorted(
        Path(str(f.locate()))
        for f in files
        if f.name.startswith("imagenet_") and f.suffix == ".jpg"
    )
    if len(photos) != 20:
        raise SystemExit(f"expected foolbox's 20 ImageNet photos, found {len(photos)}")
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "photos.txt"
    listing.write_text("".join(f"{p} {p.stem.split('_')[-1]}\n" for p in photos[:count]))
    return listing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("paper-table"))
    parser.add_argument(
        "--photos",
        type=int,
        default=20,
        help="the first N photos (default: all 20); a run that stopped early can be summarised"
        " on the photos it finished, since each image's rows are independent of the others",
    )
    arguments, extra = parser.parse_known_args()
    listing = foolbox_photos(arguments.output, arguments.photos)
    code = reciprocam(
        [
            "evaluate",
            "--data",
            str(listing),
            "--model",
            "efficientnet_lite0",
            "--methods",
            "all",
            "--metrics",
            "paper",
            "--output",
            str(arguments.output),
            *extra,
        ]
    )
    if code != 0:
        return code
    summary = json.loads((arguments.output / "summary.json").read_text())
    summary["paper_reciprocam_rows"] = PAPER
    print(f"wrote {write_results('paper_table', summary)}")
    print((arguments.output / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
