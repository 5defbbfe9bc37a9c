"""D-RISE (Petsiuk et al., CVPR 2021): detector saliency from randomly masked images.

N masks M_i are drawn the RISE way (`reciprocam.methods.rise.MaskDraws`: a `cells` x `cells`
grid kept with `probability`, upsampled bilinearly and shifted at random), the detector runs on
each x * M_i, and the map of target t weighs each mask by the target's similarity in it:

    S_t = sum_i w_{t,i} M_i,    w_{t,i} = max_j IoU(b_t, B_j) * cos(P_t, P_j) * O_j

over the candidates of the masked image (`reciprocam.detection.boxes`), read before
thresholds and NMS. All boxes share the same N passes. Defaults follow the paper's COCO
setting: 5000 masks of 16 x 16 cells, probability 0.5.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import OptionError
from ..methods.rise import MaskDraws
from ..options import positive
from .explainer import Context, DetectionExplainer


class DRISE(DetectionExplainer):
    """D-RISE on a torchvision detector.

    Args:
        masks: number of random masks N (default 5000).
        cells: mask grid size (default 16).
        probability: chance a cell is kept (default 0.5).
        seed: seed of the masks.
        batch_size: masked images per pass (default 16).

    The other options (threshold, progress) are `DetectionExplainer`'s.
    """

    maps_on_image: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        *,
        masks: int = 5000,
        cells: int = 16,
        probability: float = 0.5,
        seed: int = 0,
        batch_size: int = 16,
        threshold: float = 0.5,
        progress: bool = False,
    ) -> None:
        super().__init__(model, threshold=threshold, batch_size=batch_size, progress=progress)
        self.masks = positive("masks", masks)
        self.cells = positive("cells", cells)
        if not 0 < probability <= 1:
            raise OptionError(f"probability must be in (0, 1], not {probability!r}")
        self.probability = probability
        self.seed = seed

    def _raw_maps(self, context: Context) -> Tensor:
        image = context.image
        size = (image.shape[1], image.shape[2])
        draws = MaskDraws.draw(self.masks, size, self.cells, self.probability, self.seed)
        per_pass = self.batch_size or 16
        saliency = image.new_zeros(context.targets.count, *size, dtype=torch.float32)
        with torch.inference_mode():
            for start in tqdm(
                range(0, self.masks, per_pass), desc="DRISE", disable=not self.progress
            ):
                masks = draws.masks(start, min(start + per_pass, self.masks), size).to(image)
                images, _ = self.detector.transform(list(image[None] * masks[:, None]))
                levels = self.detector.features(images.tensors)
                candidates = self.detector.candidates(levels, context.prepared)
                weights = context.targets.similarity(candidates)  # (n, T)
                saliency += torch.einsum("nt,nhw->thw", weights.float(), masks.float())
        return saliency
