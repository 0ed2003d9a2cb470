"""The depthers exported: torch.export and ONNX, one graph for every image size (batch 1).

Measured on ViT-S/14 depthers with generated weights, on a 4-block backbone (conftest.small_depther:
the hub's heads and glue; every block traces the same way, and the export time grows with the
number of blocks): the exported program equals eager exactly (max abs 0.0);
onnxruntime differs by float rounding (reordered kernels), asserted below 1e-4 m max abs and 1e-4
relative (seen: DPT 2.3e-6 m / 1.2e-6 on 4 blocks, 5.7e-6 m / 1.2e-5 at full depth; linear 6.1e-5 m /
1.6e-6 at depths near 40 m).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minidino
from minidino.conformance import golden

from conftest import small_depther

SIZES = [(1, 3, 37, 50), (1, 3, 29, 71), (1, 3, 98, 43)]  # none a multiple of 14 on both sides


def test_export_program_of_a_depther_is_exact_at_every_size():
    model = small_depther("linear", 3)  # 4 layers
    program = minidino.export_program(model, size=(37, 50)).module()
    for shape in SIZES:
        x = golden.generate_images(3, 7, shape)
        with torch.no_grad():
            (got,), want = program(x), model(x)
        d = float((got - want).abs().max())
        print(f"export_program dinov2_vits14_ld (4 blocks) {shape}: max abs {d}")
        assert got.shape == (1, 1, *shape[2:]) and d == 0.0


def test_onnx_of_a_depther_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = small_depther("dpt", 3)
    path = minidino.export_onnx(model, tmp_path / "dd.onnx", size=(37, 50))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["depth"]
    for shape in SIZES:
        x = golden.generate_images(3, 8, shape)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        d, rel = float(np.abs(got - want).max()), float((np.abs(got - want) / np.abs(want)).max())
        print(f"onnxruntime dinov2_vits14_dd (4 blocks) {shape}: max abs {d:.3e} m, max relative {rel:.3e}")
        assert got.shape == want.shape and d < 1e-4 and rel < 1e-4 and want.std() > 1e-3


def test_exported_depther_sizes_are_checked():
    model = minidino.create_model("dinov2_vits14_dd", device="meta")
    with pytest.raises(ValueError, match="29 px or more"):
        minidino.export_program(model, size=(20, 50))
    with pytest.raises(ValueError, match="unknown graph outputs"):
        minidino.export_program(model, outputs=["x_norm_clstoken"])
