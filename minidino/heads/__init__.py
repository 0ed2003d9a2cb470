"""Heads on top of the backbone, one file per family.

- classifier.py: the hub's ImageNet linear classifiers (`*_lc`)
- dino_head.py: the DINO projection head of the training checkpoints
- depth.py: the depthers (`*_ld`, `*_dd`): the shared wrapper, its config and the linear bins head
- dpt.py: the DPT head of the `*_dd` depthers
- dinotxt.py, text_transformer.py: dino.txt (image head, text encoder, the two-tower model)
"""

from .classifier import LinearClassifier
from .dino_head import DINOHead, WeightNormLinear
from .depth import Depther, LinearDepthHead
from .depth_config import DepthConfig
from .dinotxt import DinoTxt, DinoTxtConfig
from .dpt import DPTHead

__all__ = ["LinearClassifier", "DINOHead", "WeightNormLinear", "DepthConfig", "Depther", "LinearDepthHead", "DPTHead",
           "DinoTxt", "DinoTxtConfig"]
