"""Heads on top of the backbone, one file per family.

- classifier.py: the hub's ImageNet linear classifiers (`*_lc`)
- dino_head.py: the DINO projection head of the training checkpoints
- dinotxt.py, text_transformer.py: dino.txt (image head, text encoder, the two-tower model)
"""

from .classifier import LinearClassifier
from .dino_head import DINOHead, WeightNormLinear
from .dinotxt import DinoTxt, DinoTxtConfig

__all__ = ["LinearClassifier", "DINOHead", "WeightNormLinear", "DinoTxt", "DinoTxtConfig"]
