"""Weights: every published file found, read safely, translated, loaded strictly and saved back.

- download.py: the cache, downloads with SHA-256 pins (checkpoints.json) and timeouts
- read.py: reading .pth / .safetensors / sharded / Hugging Face folders without running code
- layouts.py: every published DINOv2 layout -> the official keys, one function per layout
- huggingface.py: the transformers layouts both ways (Dinov2Model, DPTForDepthEstimation)
- load.py: load_weights (any source, any layout, checked strictly; dino.txt's three files)
- save.py: save_weights (official or transformers layouts, safetensors)
- pretrained.py: what create_model(pretrained=True) fetches, from the catalogue
- vocab.py: dino.txt's vocabulary file and `tokenize`
"""

from .read import CheckpointError, UnsafeCheckpointError, read_checkpoint
from .layouts import detect_layout, guess_hub_name, infer_config, to_official
from .huggingface import dpt_to_huggingface, huggingface_config, huggingface_dpt_config, to_huggingface
from .load import LoadReport, WeightsMismatchError, load_weights
from .save import save_weights
from .pretrained import load_pretrained, weight_files

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "WeightsMismatchError", "LoadReport", "read_checkpoint",
    "to_official", "to_huggingface", "detect_layout", "guess_hub_name", "infer_config", "load_weights", "save_weights",
    "load_pretrained", "weight_files", "huggingface_config", "huggingface_dpt_config", "dpt_to_huggingface",
]
