"""Explanation methods, one module each."""

from .reciprocam import ReciproCAM

__all__ = ["ReciproCAM"]
