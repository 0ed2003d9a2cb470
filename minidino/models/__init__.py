"""The transformers: the config, the blocks they share, and one module per family.

- config.py: the frozen config dataclasses (the shared fields, DINOv2's, DINOv3's)
- layers.py: patch embedding, attention (with DINOv3's masked key bias), FFNs, LayerScale, the block
- backbone.py: what both backbones share around their blocks (lists, intermediate layers, maps)
- posembed.py: DINOv2's interpolated position embedding and its two quirks
- rope.py: DINOv3's rotary position embedding
- attention.py: attention maps (the explicit path's softmax weights)
- checks.py: input checks with clear errors
- dinov2.py: the DINOv2 backbone
- dinov3.py: the DINOv3 backbone
"""
