"""Golden vectors of dino.txt: the case format, its runner, and the generator that made them.

A case (tests/golden/index.json, "model": "dinotxt") is a reduced dino.txt (backbone `depth`,
text transformer `text_width` / `text_num_heads` / `text_layers`), its weights from the
splitmix64 generator (generator.py) (same rule as every case: sorted keys, key k uses stream k),
images from `generate_images` and token ids from `generate_token_ids`. Stored outputs are
named after the call that gives them (see OUTPUTS); `make_case` ran the OFFICIAL model on
those weights and inputs to write the reference file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..factory import create_model
from ..utils.atomic import atomic_write
from .compare import CaseResult
from .generator import generate_for, generate_images, uniform, weights_sha256
from .reference import official_dinotxt

__all__ = ["OUTPUTS", "generate_token_ids", "build_dinotxt_case", "run_dinotxt_case", "make_case", "outputs_of"]

SOT_ID, EOT_ID, VOCAB = 49406, 49407, 49408
OUTPUTS = ("encode_image", "encode_image(normalize=True)", "encode_text", "encode_text(normalize=True)",
           "class_token", "patch_tokens[:,::3]", "logits_per_image", "logits_per_text")


def generate_token_ids(seed: int, stream: int, lengths: list[int], context_length: int) -> Tensor:
    """(T, L) ids shaped like the tokenizer's: <sot>, random byte-pair ids in [1, 49405], <eot> at
    position lengths[t], zeros after (lengths[t] == L - 1 fills the whole context).

    Examples:
        >>> generate_token_ids(0, 300, [3, 5], context_length=8).tolist()     # (T, L) = (2, 8)
        [[49406, 47377, 35114, 49407, 0, 0, 0, 0], [49406, 25551, 26507, 47309, 17067, 49407, 0, 0]]
    """
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
    """The reduced dino.txt of a case (sizes from its depth / text_* fields) with its generated
    weights, in eval mode, and those weights as a state dict.

    Examples:
        >>> from minidino.conformance.golden import load_index, weights_sha256
        >>> case = next(c for c in load_index()["cases"] if c["model"] == "dinotxt")
        >>> case["depth"], case["text_width"], case["text_num_heads"], case["text_layers"]
        (2, 256, 4, 2)
        >>> model, sd = build_dinotxt_case(case)                                   # doctest: +SKIP
        >>> weights_sha256(sd) == case["weights_sha256"], len(model.text_model.backbone.blocks)   # doctest: +SKIP
        (True, 2)

        (The build is skipped in the doctests for time: about 2 s, the ViT-L width; tests/test_golden.py
        builds and runs it.)
    """
    model = create_model("dinotxt", device="meta", **_overrides(case))
    sd = generate_for(model, case["weight_seed"])
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval(), sd


@torch.no_grad()
def outputs_of(model: torch.nn.Module, images: Tensor, ids: Tensor) -> dict[str, Tensor]:
    """Every stored output of a case, from any model with the official dino.txt methods.

    Examples:
        >>> model = minidino.create_model("dinotxt", depth=1, vision_embed_dim=64, vision_num_heads=2,
        ...                               embed_dim=128, text_width=64, text_num_heads=2, text_layers=1)
        >>> images, ids = torch.randn(1, 3, 28, 42), generate_token_ids(0, 300, [3, 5], 8)   # B = 1, T = 2
        >>> {k: tuple(v.shape) for k, v in outputs_of(model, images, ids).items()}    # named as in OUTPUTS
        {'encode_image': (1, 128), 'encode_image(normalize=True)': (1, 128), 'encode_text': (2, 128),
         'encode_text(normalize=True)': (2, 128), 'class_token': (1, 64), 'patch_tokens[:,::3]': (1, 2, 64),
         'logits_per_image': (1, 2), 'logits_per_text': (2, 1)}
    """
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


def run_dinotxt_case(case: dict[str, Any], ref: dict[str, Tensor], model: torch.nn.Module | None = None,
                     inputs: int | None = None) -> list[CaseResult]:
    """Compare `model` (default: the case's own, build_dinotxt_case) with the reference tensors
    `ref` (keys "<input tag>/<output>", as make_case writes them): one CaseResult per input and
    output, token ids included. golden.run_case reads `ref` from the case's file and calls this.

    Examples:
        A made-up case and a reference made by the same model, to show the format (the stored
        case runs with `minidino.conformance.golden.run_case(case)`, as tests/test_golden.py does):

        >>> model = minidino.create_model("dinotxt", depth=1, vision_embed_dim=64, vision_num_heads=2,
        ...                               embed_dim=128, text_width=64, text_num_heads=2, text_layers=1)
        >>> inp = {"tag": "r28x42", "shape": [1, 3, 28, 42], "image_stream": 1000, "token_stream": 3000,
        ...        "text_lengths": [3, 5], "context_length": 8}
        >>> case = {"model": "dinotxt", "weight_seed": 0, "inputs": [inp]}
        >>> images = minidino.conformance.golden.generate_images(0, 1000, (1, 3, 28, 42))
        >>> ids = generate_token_ids(0, 3000, [3, 5], 8)
        >>> ref = {f"r28x42/{k}": v for k, v in outputs_of(model, images, ids).items()} | {"r28x42/token_ids": ids}
        >>> results = run_dinotxt_case(case, ref, model)
        >>> [(r.output, r.shape) for r in results][:3], max(r.max_abs for r in results)
        ([('token_ids', (2, 8)), ('encode_image', (1, 128)), ('encode_image(normalize=True)', (1, 128))], 0.0)
    """
    if model is None:
        model, _ = build_dinotxt_case(case)
    results = []
    for inp in case["inputs"][:inputs]:  # inputs=N: the first N only (selftest's quick pass)
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
    generated weights and inputs; write `case["file"]` into out_dir; return the case with its digest.

    Examples:
        This needs the official hub code (minidino.conformance.reference), hence skipped here:

        >>> from minidino.conformance.golden import load_index
        >>> from minidino.conformance.reference import official_dinotxt
        >>> case = next(c for c in load_index()["cases"] if c["model"] == "dinotxt")
        >>> official = official_dinotxt(depth=2, text_width=256, text_num_heads=4, text_layers=2)   # doctest: +SKIP
        >>> made = make_case(".", official, case)                                                 # doctest: +SKIP
        >>> made["weights_sha256"] == case["weights_sha256"], made["file"]                       # doctest: +SKIP
        (True, 'dinotxt_depth2_text2x256.safetensors')
    """
    from safetensors.torch import save_file


    _, sd = build_dinotxt_case(case)
    official.load_state_dict(sd, strict=True)
    tensors = {}
    for inp in case["inputs"][:inputs]:  # inputs=N: the first N only (selftest's quick pass)
        images, ids = _inputs(case, inp)
        tensors[f"{inp['tag']}/token_ids"] = ids
        for key, value in outputs_of(official.eval(), images, ids).items():
            tensors[f"{inp['tag']}/{key}"] = value.clone().contiguous()  # logits_per_text is a view of the other
    made_by = {"made_by": "official dino.txt (minidino.conformance.golden_text.make_case)"}
    atomic_write(Path(out_dir) / case["file"], lambda tmp: save_file(tensors, str(tmp), metadata=made_by))
    return dict(case, weights_sha256=weights_sha256(sd))


def side_by_side(repo: str | Path | None = None, seed: int = 0) -> list[tuple[str, float]]:
    """The official dino.txt (reduced: backbone 2 blocks, text 2 layers of width 128) and minidino's,
    same generated weights and inputs, on this machine: (output, max abs difference) per output."""

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
