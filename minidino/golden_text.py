"""Golden vectors of dino.txt: the case format, its runner, and the generator that made them.

A case (tests/golden/index.json, "model": "dinotxt") is a reduced dino.txt (backbone `depth`,
text transformer `text_width` / `text_num_heads` / `text_layers`), its weights from the
splitmix64 generator of golden.py (same rule as every case: sorted keys, key k uses stream k),
images from `generate_images` and token ids from `generate_token_ids`. Stored outputs are
named after the call that gives them (see OUTPUTS); `make_case` ran the OFFICIAL model on
those weights and inputs to write the reference file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .golden import CaseResult, generate_for, generate_images, uniform

__all__ = ["OUTPUTS", "generate_token_ids", "build_dinotxt_case", "run_dinotxt_case", "make_case", "outputs_of"]

SOT_ID, EOT_ID, VOCAB = 49406, 49407, 49408
OUTPUTS = ("encode_image", "encode_image(normalize=True)", "encode_text", "encode_text(normalize=True)",
           "class_token", "patch_tokens[:,::3]", "logits_per_image", "logits_per_text")


def generate_token_ids(seed: int, stream: int, lengths: list[int], context_length: int) -> Tensor:
    """(T, L) ids shaped like the tokenizer's: <sot>, random byte-pair ids in [1, 49405], <eot> at
    position lengths[t], zeros after (lengths[t] == L - 1 fills the whole context)."""
    T = len(lengths)
    u = uniform(seed, stream, T * context_length).reshape(T, context_length)
    ids = torch.from_numpy(1 + (u * (SOT_ID - 1)).astype("int64"))  # (T, L) in [1, 49405]
    for t, n in enumerate(lengths):
        if not 1 <= n < context_length:
            raise ValueError(f"length {n} must be in [1, {context_length})")
        ids[t, 0], ids[t, n] = SOT_ID, EOT_ID
        ids[t, n + 1 :] = 0
    return ids


def _overrides(case: dict[str, Any]) -> dict[str, Any]:
    return {k: case[k] for k in ("depth", "text_width", "text_num_heads", "text_layers")}


def build_dinotxt_case(case: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Tensor]]:
    from . import create_model  # late import: golden modules are leaves otherwise

    model = create_model("dinotxt", device="meta", **_overrides(case))
    sd = generate_for(model, case["weight_seed"])
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval(), sd


@torch.no_grad()
def outputs_of(model: torch.nn.Module, images: Tensor, ids: Tensor) -> dict[str, Tensor]:
    """Every stored output of a case, from any model with the official dino.txt methods."""
    cls, patches = model.get_visual_class_and_patch_tokens(images)
    per_image, per_text = model.get_logits(images, ids)
    return {
        "encode_image": model.encode_image(images), "encode_image(normalize=True)": model.encode_image(images, normalize=True),
        "encode_text": model.encode_text(ids), "encode_text(normalize=True)": model.encode_text(ids, normalize=True),
        "class_token": cls, "patch_tokens[:,::3]": patches[:, ::3], "logits_per_image": per_image, "logits_per_text": per_text,
    }


def _inputs(case: dict[str, Any], inp: dict[str, Any]) -> tuple[Tensor, Tensor]:
    images = generate_images(case["weight_seed"], inp["image_stream"], tuple(inp["shape"]))
    ids = generate_token_ids(case["weight_seed"], inp["token_stream"], inp["text_lengths"], inp["context_length"])
    return images, ids


def run_dinotxt_case(case: dict[str, Any], ref: dict[str, Tensor], model: torch.nn.Module | None = None) -> list[CaseResult]:
    if model is None:
        model, _ = build_dinotxt_case(case)
    results = []
    for inp in case["inputs"]:
        images, ids = _inputs(case, inp)
        results.append(CaseResult("dinotxt", inp["tag"], "token_ids", float((ids != ref[f"{inp['tag']}/token_ids"]).sum()),
                                  tuple(ids.shape)))
        for key, got in outputs_of(model, images, ids).items():
            want = ref[f"{inp['tag']}/{key}"]
            if got.shape != want.shape:
                raise AssertionError(f"dinotxt {inp['tag']} {key}: shape {tuple(got.shape)} != reference {tuple(want.shape)}")
            results.append(CaseResult("dinotxt", inp["tag"], key, float((got - want).abs().max()), tuple(got.shape)))
    return results


def make_case(out_dir: str | Path, official: torch.nn.Module, case: dict[str, Any]) -> dict[str, Any]:
    """Run the OFFICIAL model (reference.official_dinotxt with the case's sizes) on the case's
    generated weights and inputs; write `case["file"]` into out_dir; return the case with its digest."""
    from safetensors.torch import save_file

    from .golden import weights_sha256

    _, sd = build_dinotxt_case(case)
    official.load_state_dict(sd, strict=True)
    tensors = {}
    for inp in case["inputs"]:
        images, ids = _inputs(case, inp)
        tensors[f"{inp['tag']}/token_ids"] = ids
        for key, value in outputs_of(official.eval(), images, ids).items():
            tensors[f"{inp['tag']}/{key}"] = value.clone().contiguous()  # logits_per_text is a view of the other
    save_file(tensors, str(Path(out_dir) / case["file"]), metadata={"made_by": "official dino.txt (minidino.golden_text.make_case)"})
    return dict(case, weights_sha256=weights_sha256(sd))


def side_by_side(repo: str | Path | None = None, seed: int = 0) -> list[tuple[str, float]]:
    """The official dino.txt (reduced: backbone 2 blocks, text 2 layers of width 128) and minidino's,
    same generated weights and inputs, on this machine: (output, max abs difference) per output."""
    from . import create_model
    from .reference import official_dinotxt

    sizes = {"depth": 2, "text_width": 128, "text_num_heads": 2, "text_layers": 2}
    official = official_dinotxt(repo, **sizes)
    ours = create_model("dinotxt", device="meta", **sizes)
    sd = generate_for(ours, seed)
    ours.load_state_dict(sd, strict=True, assign=True)
    official.load_state_dict(sd, strict=True)
    images = generate_images(seed, 100, (2, 3, 56, 84))
    ids = generate_token_ids(seed, 300, [3, 30, 76], 77)
    a, b = outputs_of(official, images, ids), outputs_of(ours.eval(), images, ids)
    return [(k, float((a[k] - b[k]).abs().max())) for k in a]
