"""`reciprocam explain CLIP... --model NAME`: the maps of videos and volumes.

A video (.mp4, .mov, .avi, .mkv, .webm, ...) is explained on the model's clip length of frames,
evenly spaced over it, each resized and centre-cropped as the model expects; into --output go
`<name>_<method>.gif` (or `.mp4` with --animation mp4: each frame's crop with its map) and
`<name>_<method>.npy` (the (T, H, W) map, float32 in [0, 1] at the clip's input size). A
volume (.npy, .nii, .nii.gz: (D, H, W), or (C, D, H, W), values in [0, 1]) is normalised as
the model's frames are: `<name>_<method>.png` (its slices with the map) and `.npy` ((D, H,
W)). Every file is read before the first is explained, so that a bad one stops the run before
anything is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..clip_inputs import file_stem, read_clip_input, write_clip_map
from ..errors import OptionError
from ..files import make_folder, writable_folder
from ..photos import category_name, top_predictions, unique_stem
from ..zoo.video import load_video_model, video_model_names
from .common import (
    chosen_classes,
    classification_target,
    device_from,
    method_explainer,
    note_if_random,
)


def run(arguments: argparse.Namespace, sources: Sequence[Path]) -> int:
    """Explain the videos and volumes (the options checked by `explain.run`)."""
    if arguments.model is None:
        raise OptionError(
            "explaining a video or volume needs a --model: one of " + ", ".join(video_model_names())
        )
    writable_folder(arguments.output)  # before loading the model, so a bad --output fails fast
    loaded = load_video_model(arguments.model, arguments.weights, arguments.checkpoint)
    inputs = [read_clip_input(path, loaded) for path in sources]
    note_if_random(loaded.name, loaded.pretrained)
    target = classification_target(arguments.top, chosen_classes(arguments, loaded.categories))
    device = device_from(arguments)
    explainer = method_explainer(arguments, loaded.model.to(device))
    make_folder(arguments.output)
    used: set[str] = set()
    with explainer:
        for item in inputs:
            explanation = explainer.explain(item.tensor[None].to(device), target)
            bound = explanation.target
            assert bound is not None  # every explainer binds its target
            maps = explanation.maps[0] if bound.stacked else explanation.maps
            scores = explanation.target_probabilities[0]
            stem = unique_stem(f"{file_stem(item.path)}_{arguments.method}", used)
            written = []
            for index, saliency in enumerate(maps.float().cpu()):
                chosen = int(bound.indices[0, index])
                name = f"{stem}_{chosen}" if bound.stacked else stem
                picture = write_clip_map(
                    item,
                    saliency,
                    arguments.output / name,
                    animation=arguments.animation or "gif",
                    colormap=arguments.colormap,
                    alpha=arguments.alpha,
                )
                written.append(
                    f"map of '{category_name(chosen, loaded.categories)}'"
                    f" ({float(scores[index]):.1%}) -> {picture}"
                )
            top = top_predictions(explanation, arguments.top or 5, loaded.categories)
            ranking = ", ".join(f"{p.name} {p.probability:.1%}" for p in top)
            print(f"{item.path.name}: {ranking} | {'; '.join(written)}")
        layer = f" on layer '{explainer.target_layer}'" if explainer.target_layer else ""
    print(
        f"explained {len(inputs)} {'file' if len(inputs) == 1 else 'files'} with"
        f" {arguments.method}{layer} into {arguments.output}"
    )
    return 0
