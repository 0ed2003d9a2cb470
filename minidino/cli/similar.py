"""`minidino similar`: the nearest images of an `embed` output, by cosine of class embeddings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._common import HelpFormatter, add_model_args


def find_name(names: list[str], query: str) -> int | None:
    """Index of `query` in names: the exact string, else the same file by absolute path."""
    if query in names:
        return names.index(query)
    target = os.path.abspath(query)
    for i, n in enumerate(names):
        if os.path.abspath(n) == target:
            return i
    return None


def index_model(args: argparse.Namespace, meta: dict, index: str) -> None:
    """Set args.model / args.weights / args.overrides to what the index was made with (unless --model /
    --weights are given). An index may come from anyone: the weights it names are used only when they are
    the official ones, random ones, or an existing local file; anything else (a URL, a missing path) needs
    --weights given explicitly, so reading an index never downloads or reads what it names."""
    import re

    args.model = args.model or meta["model"]
    args.overrides = dict(meta.get("config") or {})
    if args.weights is None and not args.random_weights:
        w = meta["weights"]
        if not (w == "official" or re.fullmatch(r"random:\d+", w) or (os.path.isabs(w) and os.path.isfile(w))):
            raise SystemExit(f"minidino similar: {index} names the weights {w!r}, which minidino does not fetch or "
                             "read on an index's word: give --weights (official, a checkpoint file, or random:SEED) "
                             "to embed the query")
        args.weights = w
        args.weights_from_index = True


def build_index_model(args: argparse.Namespace, index: str) -> Any:
    """The model of `index_model`'s choice; weights named by the index that turn out not to be a checkpoint
    are reported without quoting the file (a path from an index may be any file)."""
    from ..weights.load import CheckpointError
    from ._common import build_model, parse_dtype, resolve_device, weights_spec

    try:
        return build_model(args.model, weights_spec(args), args.overrides, device=resolve_device(args.device),
                           dtype=parse_dtype(args.dtype))
    except CheckpointError as e:
        if not getattr(args, "weights_from_index", False):
            raise
        raise CheckpointError(f"{index} names the weights {args.weights}, which cannot be used ({type(e).__name__}); "
                              "give --weights") from None


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from ._common import (args_preprocessing, check_memory, describe_weights, parse_dtype, preflight_model, require_finite,
                          weights_spec)
    from .embed import embed_tensor, embed_transform, read_embeddings
    from .inputs import display_name, read_one

    if args.text is not None:
        return run_text(args)
    if args.query is None:
        raise SystemExit("minidino similar: give a QUERY image (or name in the index), or --text \"a sentence\"")
    tensors, meta = read_embeddings(args.index)  # names, rows and settings checked against each other
    if "cls" not in tensors:
        raise SystemExit(f"minidino similar: {args.index} holds no class tokens; embed with --tokens cls or both")
    names, emb = meta["names"], tensors["cls"].float()  # (N, D)
    if args.top < 1:
        raise SystemExit("minidino similar: --top must be >= 1")
    i = find_name(names, args.query)
    if i is not None:
        q = emb[i]
        source = f"{names[i]} (from the index)"
    else:
        # Embed the query exactly as the index was made: same model, weights, config, size; all checked first.
        index_model(args, meta, args.index)
        size = meta.get("size")
        config = preflight_model(args)  # the model the index names: config ranges, weights file, memory
        if size is None or size % config.patch_size:
            raise SystemExit(f"minidino similar: {args.index}: its 'size' {size!r} is not a multiple of the patch "
                             f"size {config.patch_size} (corrupt); write it again")
        check_memory(args, 1, size, size)
        spec = weights_spec(args)
        if (args.model, spec) != (meta["model"], meta["weights"]):
            print(f"minidino: warning: the index was made with {meta['model']} ({meta['weights']}); the query is "
                  f"embedded with {args.model} ({spec}): the cosines compare different models", file=sys.stderr)
        x, reason = read_one(args.query, embed_transform(size, args_preprocessing(args)))
        if x is None:
            raise SystemExit(f"minidino similar: cannot read the query {display_name(args.query)}: {reason}")
        model = build_index_model(args, args.index)
        model = getattr(model, "backbone", model)
        x = x.unsqueeze(0).to(device=next(model.parameters()).device, dtype=parse_dtype(args.dtype))  # (1, 3, S, S)
        q = embed_tensor(model, x, "cls")["cls"][0]
        require_finite(q, f"the embedding of the query {display_name(args.query)}")
        source = f"{args.query} (embedded with {args.model}, {describe_weights(args)})"
    cos = F.cosine_similarity(emb, q.unsqueeze(0), dim=1)  # (N,)
    if i is not None:
        cos[i] = float("-inf")  # not the query itself
    k = min(args.top, len(names) - (i is not None))
    values, order = torch.topk(cos, k) if k > 0 else (cos[:0], cos[:0].long())
    random_note(meta)
    print(f"nearest to {source} among {len(names)} images of {args.index}:")
    print(f"{'rank':>4s} {'cosine':>8s}  name")
    for r, (v, j) in enumerate(zip(values.tolist(), order.tolist()), 1):
        print(f"{r:4d} {v:8.4f}  {names[j]}")
    return 0


def random_note(meta: dict) -> None:
    """Say so first when the index holds embeddings of RANDOM weights: the ranking checks the pipeline only."""
    weights = str(meta.get("weights", ""))
    if weights.startswith("random:"):
        print(f"# {meta.get('model')}, RANDOM WEIGHTS (golden-vector generator, seed {weights.split(':', 1)[1]}) made "
              "this index: the ranking checks the pipeline, not real features")


def run_text(args: argparse.Namespace) -> int:
    """--text: rank the images of a dino.txt index by the cosine of their embeddings with a sentence's."""
    import torch
    import torch.nn.functional as F

    from ..catalogue import task_of
    from .embed import read_embeddings
    from .text import check_args, check_vocab, encode_texts

    if args.query is not None:
        raise SystemExit("minidino similar: give either a QUERY image or --text, not both")
    tensors, meta = read_embeddings(args.index)
    if task_of(str(meta.get("model"))) != "dinotxt" or "cls" not in tensors:
        raise SystemExit(f"minidino similar --text: {args.index} was made with {meta.get('model')}; text search needs "
                         "an index of dino.txt image embeddings: minidino embed IMAGES --model dinotxt --out INDEX")
    if args.top < 1:
        raise SystemExit("minidino similar: --top must be >= 1")
    names, emb = meta["names"], tensors["cls"].float()  # (N, E)
    args.model = None  # the text encoder must be the index's own
    index_model(args, meta, args.index)
    check_args(args, "similar --text")  # the index's model: config ranges, weights file, memory, tokenizer
    check_vocab(args, "similar --text")
    model = build_index_model(args, args.index)
    q = encode_texts(model, [args.text], args.vocab)[0].cpu()  # (E,), the same model, weights and config as the index
    cos = F.cosine_similarity(emb, q.unsqueeze(0), dim=1)  # (N,)
    values, order = torch.topk(cos, min(args.top, len(names)))
    random_note(meta)
    print(f"nearest to the text {args.text!r} among {len(names)} images of {args.index}:")
    print(f"{'rank':>4s} {'cosine':>8s}  name")
    for r, (v, j) in enumerate(zip(values.tolist(), order.tolist()), 1):
        print(f"{r:4d} {v:8.4f}  {names[j]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similar", help="nearest images to a query in an `embed` output (cosine of class tokens)",
        description="Rank the images of INDEX (a file written by `minidino embed` with class tokens) by the cosine "
                    "similarity of their class-token embeddings to QUERY's, and print the --top nearest. QUERY is a "
                    "name stored in the index (then its stored embedding is used and it is left out of the ranking) "
                    "or an image file, which is embedded with the model, weights, config and size recorded in the "
                    "index (override with --model / --weights at your own risk: embeddings of different models are "
                    "not comparable). Weights an index names are used when they are the official ones, random ones "
                    "or an existing local file; anything else (a URL) needs --weights: an index never decides what "
                    "is downloaded or read.",
        epilog="examples:\n"
               "  minidino similar photos/cat.jpg photos.safetensors --top 10\n"
               "  minidino similar new_photo.png photos.safetensors --device cuda\n"
               "  minidino similar --text \"a dog on a beach\" photos_dinotxt.safetensors",
        formatter_class=HelpFormatter,
    )
    p.add_argument("query", metavar="QUERY", nargs="?", help="an image file, or a name stored in the index")
    p.add_argument("index", metavar="INDEX_FILE", help="output of `minidino embed` (.safetensors, .npz or .npy)")
    p.add_argument("--top", "-k", type=int, default=5, help="how many neighbours to print (default 5)")
    p.add_argument("--text", default=None, metavar="SENTENCE",
                   help="search by a sentence instead of an image (the index must be made with --model dinotxt)")
    p.add_argument("--vocab", default=None, metavar="FILE", help="with --text: a local copy of CLIP's vocabulary file")
    add_model_args(p, default_model=None, default_weights=None)
    p.set_defaults(func=run)
