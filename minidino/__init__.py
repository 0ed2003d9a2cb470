"""minidino: clean-room DINOv2 and DINOv3 backbones, bit-identical to the official models.

    import minidino
    model = minidino.create_model("dinov2_vits14")          # random init; pretrained=True downloads
    feats = model.forward_features(images)                    # dict of cls / register / patch tokens
    v3 = minidino.create_model("dinov3_vitb16")             # DINOv3: gated weights, pretrained=PATH or weights=URL

The package, one folder per concern (data flows down this list, never up):

    catalogue.py   every entry point as data: family, config, builder, weights, preprocessing
    models/        the configs, the blocks both families share, one module per family (dinov2.py, dinov3.py)
    heads/         classifier, DINO head, depth (linear, DPT), dino.txt (vision head, text encoder, tokenizer)
    weights/       download and cache, reading files safely, one function per layout, load, save, pretrained
    factory.py     create_model: a catalogue row -> a built model
    export/        torch.export, ONNX, OpenVINO, ExecuTorch, CoreML, the portable NPU graph, reduced
                   precision and its accuracy, operator reports, optimize (compiled, reduced precision)
    conformance/   the golden-vector generator and runner, the official-code runner, trace and compare,
                   the numpy-only reference
    cli/           one module per subcommand
    utils/         transforms, pictures, atomic writes, locks, progress, hardware and memory
"""

from __future__ import annotations

from .catalogue import get_config, list_models
from .models.config import DinoConfig, Dinov3Config
from .models.dinov2 import DinoVisionTransformer
from .models.dinov3 import Dinov3VisionTransformer
from .heads import DINOHead, Depther, DinoTxt, LinearClassifier
from .weights import load_weights, save_weights
from .weights.vocab import tokenize
from .factory import create_model
from .export import export_onnx, export_program  # onnx itself is imported only inside them
from .export.optimize import optimize

__all__ = [
    "create_model", "list_models", "get_config", "DinoConfig", "DinoVisionTransformer", "Dinov3Config",
    "Dinov3VisionTransformer", "LinearClassifier", "DINOHead", "Depther", "optimize",
    "DinoTxt", "tokenize",
    "load_weights", "save_weights", "export_onnx", "export_program",
]
__version__ = "0.1.0"
