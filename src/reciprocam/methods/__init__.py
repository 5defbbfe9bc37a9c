"""Explanation methods, one module each."""

from .reciprocam import ReciproCAM
from .vit_reciprocam import ViTReciproCAM

__all__ = ["ReciproCAM", "ViTReciproCAM"]
