"""Heads on top of the backbone, one file per family.

- classifier.py: the hub's ImageNet linear classifiers (`*_lc`)
- dino_head.py: the DINO projection head of the training checkpoints
"""

from .classifier import LinearClassifier
from .dino_head import DINOHead, WeightNormLinear

__all__ = ["LinearClassifier", "DINOHead", "WeightNormLinear"]
