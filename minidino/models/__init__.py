"""The transformers: the config, the blocks they share, and one module per family.

- config.py: the frozen config dataclass of a backbone
- layers.py: patch embedding, attention, FFNs, LayerScale, the block
- posembed.py: DINOv2's interpolated position embedding and its two quirks
- attention.py: attention maps (the explicit path's softmax weights)
- packing.py: images of different sizes in one pass
- checks.py: input checks with clear errors
- dinov2.py: the DINOv2 backbone
"""
