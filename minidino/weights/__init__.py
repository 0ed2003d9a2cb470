"""Weights: download and cache (download.py), every published layout read, translated, loaded and
saved (load.py), and dino.txt's three files (dinotxt.py)."""

from .load import (
    CheckpointError, LoadReport, UnsafeCheckpointError, WeightsMismatchError, detect_layout, dpt_to_huggingface,
    guess_hub_name, huggingface_config, huggingface_dpt_config, infer_config, load_pretrained, load_weights,
    read_checkpoint, save_weights, to_huggingface, to_official,
)

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "WeightsMismatchError", "LoadReport", "read_checkpoint",
    "to_official", "to_huggingface", "detect_layout", "guess_hub_name", "infer_config", "load_weights", "save_weights",
    "load_pretrained", "huggingface_config", "huggingface_dpt_config", "dpt_to_huggingface",
]
