"""ONNX export of dino.txt's image and text encoders: free batch, image size and text length;
onnxruntime against eager. Tolerance 1e-4 as for the backbone (different matmul / softmax
kernels; measured ~6e-6). Needs the `export` extra; skipped without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minidino.conformance import golden
from minidino.export.dinotxt import export_dinotxt_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = dict(vision_embed_dim=64, vision_num_heads=2, vision_ffn_hidden_dim=256, depth=1, embed_dim=128,
            head_ffn_hidden_dim=176, text_width=64, text_num_heads=2, text_layers=1)
TOL = 1e-4


def test_image_and_text_encoders_to_onnx(tmp_path):
    model = golden.random_model("dinotxt", 0, **TINY)
    image_path, text_path = export_dinotxt_onnx(model, tmp_path / "image.onnx", tmp_path / "text.onnx")
    image = ort.InferenceSession(str(image_path), providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
    worst = {"image": 0.0, "text": 0.0}
    g = torch.Generator().manual_seed(0)
    for B, H, W in [(1, 14, 14), (3, 56, 84), (2, 224, 182)]:  # batch and size free
        x = torch.randn(B, 3, H, W, generator=g)
        with torch.no_grad():
            eager = [model.encode_image(x), *model.get_visual_class_and_patch_tokens(x)]
        got = image.run(None, {"x": x.numpy()})
        assert [o.shape for o in got] == [tuple(e.shape) for e in eager]
        worst["image"] = max(worst["image"], *(float(np.abs(e.numpy() - o).max()) for e, o in zip(eager, got)))
    for B, L, eot in [(1, 77, [5]), (4, 77, [1, 10, 40, 76]), (2, 16, [3, 15])]:  # batch and length free
        ids = torch.randint(1, 49406, (B, L), generator=g)
        for b, n in enumerate(eot):
            ids[b, 0], ids[b, n] = 49406, 49407
            ids[b, n + 1 :] = 0
        with torch.no_grad():
            eager_t = model.encode_text(ids)
        worst["text"] = max(worst["text"], float(np.abs(eager_t.numpy() - text.run(None, {"token_ids": ids.numpy()})[0]).max()))
    print(f"dino.txt ONNX vs eager: image encoder max abs {worst['image']:.2e}, text encoder max abs {worst['text']:.2e}")
    assert worst["image"] < TOL and worst["text"] < TOL


def test_export_bad_arguments(tmp_path):
    model = golden.random_model("dinotxt", 0, **TINY)
    with pytest.raises(ValueError, match="image_path and/or text_path"):
        export_dinotxt_onnx(model)
    with pytest.raises(ValueError, match=".onnx"):
        export_dinotxt_onnx(model, tmp_path / "image.bin")
    with pytest.raises(TypeError, match="dino.txt"):
        export_dinotxt_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
