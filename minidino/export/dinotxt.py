"""ONNX export of dino.txt's two encoders, each to its own graph.

    minidino.export.dinotxt.export_dinotxt_onnx(model, image_path="dinotxt_image.onnx", text_path="dinotxt_text.onnx")

Image graph: input "x" (B, 3, H, W) float32, batch and size free (sides multiples of 14; the
position embedding in its exportable "matrix" form, see export.py), outputs
"image_embedding" (B, E) (= encode_image(x), not normalised), "class_token" (B, D) and
"patch_tokens" (B, h*w, D) (= get_visual_class_and_patch_tokens).
Text graph: input "token_ids" (B, L) int64 from minidino.tokenize, batch and length free
(L <= 77), output "text_embedding" (B, E) (= encode_text(ids), not normalised).
Normalise (x / ||x||) and scale by exp(logit_scale) outside the graphs to get the logits.
The graphs skip the Python-side input checks of encode_image / encode_text: give them valid input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write_files
from .mode import set_export_pos, size_oblivious, torch_onnx_quiet
from ..heads.dinotxt import DinoTxt

__all__ = ["export_dinotxt_onnx", "ImageEncoder", "TextEncoder"]


class ImageEncoder(nn.Module):
    """x (B, 3, H, W) -> (image embedding (B, 2D), class token (B, D), patch tokens (B, h*w, D)).

    The image graph of export_dinotxt_onnx, as a module (it shares the model's weights).

    Examples:
        >>> model = minidino.create_model("dinotxt", depth=1, vision_embed_dim=64, vision_num_heads=2,
        ...                               embed_dim=128, text_width=64, text_num_heads=2, text_layers=1)
        >>> x = torch.randn(2, 3, 28, 42)                                     # h, w = 2, 3
        >>> embedding, cls, patches = ImageEncoder(model)(x)
        >>> tuple(embedding.shape), tuple(cls.shape), tuple(patches.shape)    # (B, 2D), (B, D), (B, h*w, D)
        ((2, 128), (2, 64), (2, 6, 64))
        >>> torch.equal(embedding, model.encode_image(x))
        True
    """

    def __init__(self, model: DinoTxt) -> None:
        super().__init__()
        self.visual_model = model.visual_model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls, patches = self.visual_model.get_class_and_patch_tokens(x)
        return torch.cat([cls, patches.mean(dim=1)], dim=-1), cls, patches  # as VisionTower.forward


class TextEncoder(nn.Module):
    """token ids (B, L) -> text embedding (B, E).

    The text graph of export_dinotxt_onnx, as a module (it shares the model's weights).

    Examples:
        >>> model = minidino.create_model("dinotxt", depth=1, vision_embed_dim=64, vision_num_heads=2,
        ...                               embed_dim=128, text_width=64, text_num_heads=2, text_layers=1)
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]] * 2)         # (B, L), from minidino.tokenize
        >>> tuple(TextEncoder(model)(ids).shape), torch.equal(TextEncoder(model)(ids), model.encode_text(ids))
        ((2, 128), True)
    """

    def __init__(self, model: DinoTxt) -> None:
        super().__init__()
        self.text_model = model.text_model

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.text_model(token_ids)


def _onnx_export(module: nn.Module, args: tuple[Any, ...], path: Path, shapes: Any, inputs: list[str],
                 outputs: list[str], opset: int | None) -> None:
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with size_oblivious(), torch_onnx_quiet():
        atomic_write_files(path, lambda tmp: torch.onnx.export(  # a failed export leaves no partial file
            module.eval(), args, str(tmp), dynamo=True, dynamic_shapes=shapes, input_names=inputs,
            output_names=outputs, verbose=False, **kwargs))


def export_dinotxt_onnx(model: DinoTxt, image_path: str | Path | None = None, text_path: str | Path | None = None, *,
                        opset: int | None = None) -> list[Path]:
    """Write the image encoder and/or the text encoder of `model` to ONNX files; returns the paths written.

    Examples:
        >>> model = minidino.create_model("dinotxt", depth=1, vision_embed_dim=64, vision_num_heads=2,
        ...                               embed_dim=128, text_width=64, text_num_heads=2, text_layers=1)
        >>> export_dinotxt_onnx(model, "image.onnx", "text.onnx")                         # doctest: +SKIP
        [PosixPath('image.onnx'), PosixPath('text.onnx')]
        >>> import onnxruntime as ort                                                       # doctest: +SKIP
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]])                          # (B, L)
        >>> ort.InferenceSession("text.onnx").run(None, {"token_ids": ids.numpy()})[0].shape   # doctest: +SKIP
        (1, 128)
        >>> x = torch.randn(2, 3, 28, 42)                                                  # (B, 3, H, W)
        >>> outs = ort.InferenceSession("image.onnx").run(None, {"x": x.numpy()})          # doctest: +SKIP
        >>> [o.shape for o in outs]              # image embedding, class token, patch tokens  # doctest: +SKIP
        [(2, 128), (2, 64), (2, 6, 64)]

        (The export is skipped in the doctests for time: about 8 s; tests/test_dinotxt_export.py runs it.)
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with a clear message)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs the export extra: pip install 'minidino[export]' ({e})") from None
    if not isinstance(model, DinoTxt):
        raise TypeError(f"export_dinotxt_onnx exports a dino.txt model, got {type(model).__name__}")
    paths = [Path(p) for p in (image_path, text_path) if p is not None]
    if not paths:
        raise ValueError("give image_path and/or text_path")
    for p in paths:
        if p.suffix != ".onnx":
            raise ValueError(f"ONNX path should end in .onnx, got {str(p)!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    Dim = torch.export.Dim
    device = model.logit_scale.device
    try:
        if image_path is not None:
            vit = model.visual_model.backbone.model
            method = vit.pos_embed_method
            set_export_pos(vit, None)  # the matrix resize: one graph for every image size
            try:
                P = vit.patch_size
                x = torch.randn(2, 3, 2 * P, 3 * P, device=device)  # batch 2: torch.export specialises sizes of 1
                shapes = {"x": {0: Dim("batch", min=1), 2: P * Dim("h", min=1), 3: P * Dim("w", min=1)}}
                _onnx_export(ImageEncoder(model), (x,), Path(image_path), shapes, ["x"],
                             ["image_embedding", "class_token", "patch_tokens"], opset)
            finally:
                vit.pos_embed_method = method
        if text_path is not None:
            L = model.config.text_context_length
            ids = torch.zeros(2, L, dtype=torch.long, device=device)
            ids[:, 0], ids[:, 5] = 49406, model.config.text_vocab_size - 1
            shapes = {"token_ids": {0: Dim("batch", min=1), 1: Dim("L", min=2, max=L)}}
            _onnx_export(TextEncoder(model), (ids,), Path(text_path), shapes, ["token_ids"], ["text_embedding"], opset)
    finally:
        model.train(was_training)
    return paths
