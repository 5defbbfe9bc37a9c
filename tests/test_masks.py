"""The spatial masks, written out by hand: row-major one-hot and the clipped 3x3 Gaussian."""

from __future__ import annotations

import torch

from reciprocam.methods.reciprocam import spatial_masks


def test_pixel_masks_are_one_hot_in_row_major_order():
    masks = spatial_masks(2, 3, "pixel", torch.zeros(1))
    assert masks.shape == (6, 1, 2, 3)
    for k in range(6):
        expected = torch.zeros(2, 3)
        expected[k // 3, k % 3] = 1.0  # k = i * W + j
        assert torch.equal(masks[k, 0], expected)


def test_gaussian_masks_are_clipped_at_the_borders_and_not_renormalised():
    masks = spatial_masks(3, 3, "gaussian", torch.zeros(1)) * 16
    corner = torch.tensor([[4.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    edge = torch.tensor([[2.0, 4.0, 2.0], [1.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    centre = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    assert torch.equal(masks[0, 0], corner)
    assert torch.equal(masks[1, 0], edge)
    assert torch.equal(masks[4, 0], centre)
    assert torch.equal(masks[8, 0], corner.flip(0, 1))
    # the mass of a window: 9/16 in a corner, 12/16 on an edge, 1 inside
    assert (masks.sum(dim=(1, 2, 3)) / 16).tolist() == [
        0.5625,
        0.75,
        0.5625,
        0.75,
        1.0,
        0.75,
        0.5625,
        0.75,
        0.5625,
    ]


def test_masks_follow_the_dtype_and_device_of_the_features():
    masks = spatial_masks(4, 5, "gaussian", torch.zeros(1, dtype=torch.float64))
    assert masks.dtype == torch.float64
    assert masks.shape == (20, 1, 4, 5)
