"""Several maps from one pass: ReciproCAM's cost for 2, 3 and every class, against one map.

The demo's ImageNet EfficientNet-Lite0 (real weights, offline) on the demo photo of Chelsea the
cat at 224x224, batch 1, CPU: `--class 281,285` (tabby, Egyptian cat), `--top 3` and all 1000
classes, each timed side by side with the single map of the top-1 class and with one plain
inference (interleaved repeats, medians). Goal: several classes cost at most 1.05x one map.

    python benchmarks/bench_targets.py [--repeats 20]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, time_interleaved, write_results

from reciprocam import ReciproCAM
from reciprocam.demo import demo_photos
from reciprocam.images import load_image
from reciprocam.targets import TopClasses
from reciprocam.zoo import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    arguments = parser.parse_args()
    loaded = load_model()
    model = loaded.model
    x, _ = loaded.preprocessing(load_image(demo_photos()[0]))
    x = x[None]
    explainer = ReciproCAM(model)
    runs = {
        "inference": lambda: model(x),
        "one map (top-1)": lambda: explainer(x),
        "--class 281,285": lambda: explainer(x, [[281, 285]]),
        "--top 3": lambda: explainer(x, TopClasses(3)),
        "all 1000 classes": lambda: explainer(x, "all"),
    }
    with torch.inference_mode():
        explainer(x)  # resolve the layer and the shortcut before timing
        seconds = time_interleaved(runs, arguments.repeats)
    info = machine()
    print(f"ReciproCAM, several maps per image; {loaded.name}, {info['cpu']}, batch 1, 224x224")
    print("| maps | time | ratio to one map | ratio to inference |")
    print("|---|---|---|---|")
    rows = []
    for name, value in seconds.items():
        to_one = value / seconds["one map (top-1)"]
        to_inference = value / seconds["inference"]
        rows.append(
            {"maps": name, "seconds": value, "to_one_map": to_one, "to_inference": to_inference}
        )
        print(f"| {name} | {value * 1000:.1f} ms | {to_one:.3f}x | {to_inference:.2f}x |")
    print(f"wrote {write_results('targets', {'model': loaded.name, 'rows': rows})}")


if __name__ == "__main__":
    main()
