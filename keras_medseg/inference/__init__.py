"""Whole-image / whole-volume inference with window-sized models."""
from keras_medseg.inference.sliding_window import (
    grid_positions,
    importance_map,
    sliding_window_inference,
)

__all__ = ["grid_positions", "importance_map", "sliding_window_inference"]
