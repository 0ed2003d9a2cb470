"""`minidino embed` and `minidino merge`: embeddings of many images, in files that keep the names.

Order and shares. The inputs are expanded to one ordered list of paths (folders walked in
sorted order). The list is cut into batches of --batch-size at fixed positions; --shard I/N
takes a contiguous run of those batches. Every image is therefore computed in the same batch
whether the corpus runs as one process or as N shards, and `merge` (which concatenates the
shards in order) reproduces the single run's file exactly.

Checkpoints. Results are written every --checkpoint-every images as atomic part files in
`OUT.parts/` (beside the output), with a manifest of the settings; --resume loads the parts
already written and computes only the rest. The final file is written to a temporary name
and renamed, so OUT is either absent or complete; the parts are then removed.

Output files: see embeddings_file.py.

Over 400 lines on purpose: `embed` and `merge` share the batch positions, the shard arithmetic and
the parts format, and a resume is only safe if one reader checks all three in one place.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write
from ._common import NOT_FINITE, HelpFormatter, add_model_args
from .errors import EXIT_WEIGHTS, fail
from .embeddings_file import (FORMAT, SUFFIXES, TOKEN_KEYS, VERSION, _check_suffix, check_header_room,  # noqa: F401
                              read_embeddings, sidecar_path, write_embeddings)
from .inputs import display_name, report_failures


def log(msg: str) -> None:
    print(f"minidino: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ inputs
def gather_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, folders (walked recursively, sorted, image extensions only) and lists of paths
    (a .txt file: one path a line, blank lines and lines starting with # ignored, relative
    paths relative to the list's folder), in the order given, without duplicates
    (minidino.cli.inputs.expand_inputs, without its failures)."""
    from .inputs import expand_inputs

    return expand_inputs(inputs)[0]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (0 <= I < N) or 'auto' (RANK and WORLD_SIZE of torchrun / torch.distributed)."""
    if text is None:
        return None
    if text == "auto":
        if "WORLD_SIZE" not in os.environ:
            return None  # not under torchrun: one process does everything
        I, N = int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])
    else:
        try:
            a, b = text.split("/")
            I, N = int(a), int(b)
        except ValueError:
            raise SystemExit(f"minidino embed: --shard expects I/N (e.g. 0/4) or auto, got {text!r}") from None
    if not 0 <= I < N:
        raise SystemExit(f"minidino embed: --shard {I}/{N}: need 0 <= I < N")
    return None if N == 1 else (I, N)


def shard_path(out: Path, shard: tuple[int, int] | None) -> Path:
    """emb.safetensors -> emb.shard-2-of-4.safetensors (the file `merge` joins)."""
    if shard is None:
        return out
    return out.with_name(f"{out.stem}.shard-{shard[0]}-of-{shard[1]}{out.suffix}")


def shard_batches(n_batches: int, shard: tuple[int, int] | None) -> range:
    if shard is None:
        return range(n_batches)
    I, N = shard
    return range(I * n_batches // N, (I + 1) * n_batches // N)


# ------------------------------------------------------------------ files
# ------------------------------------------------------------------ computing
def embed_transform(size: int, preprocessing: Any = None) -> Any:
    """The preprocessing of `embed`: the ImageNet evaluation recipe scaled to `size` (shorter side
    to size * 256 / 224, bicubic; centre crop size x size), normalised with `preprocessing`'s mean
    and std (the weights' own: minidino.cli.weight_sets.preprocessing_of; None: ImageNet's)."""
    from ..catalogue import IMAGENET
    from ..utils.transforms import classification_transform
    from .inputs import DEFAULT_LIMITS, InputError

    resize = round(size * 256 / 224)
    stats = preprocessing or IMAGENET

    def transform(img: Any) -> Any:
        W, H = img.size  # the resize's output (shorter side -> resize) is bounded like an input, before it is made
        new = (resize, int(resize * H / W)) if W <= H else (int(resize * W / H), resize)
        if new[0] * new[1] > DEFAULT_LIMITS.max_pixels:
            raise InputError(getattr(img, "filename", "") or "image",
                             f"{W}x{H} would be resized to {new[0]}x{new[1]} before the crop, more than "
                             f"{DEFAULT_LIMITS.max_pixels / 1e6:.1f} Mpx; choose a smaller --size or crop the image")
        return classification_transform(img, resize=resize, crop=size, mean=stats.mean, std=stats.std)
    return transform


def _decode(path: str, transform: Any, size: int) -> tuple[Any, str | None]:
    """(3, size, size) tensor of one input, or (None, reason): minidino.cli.inputs.read_one."""
    from .inputs import read_one

    x, reason = read_one(path, transform)
    if x is not None and tuple(x.shape) != (3, size, size):
        return None, f"preprocessed to {tuple(x.shape)}, not (3, {size}, {size})"
    return x, reason


def embed_tensor(model: Any, x: Any, tokens: str) -> dict[str, Any]:
    """{'cls': (B, D), 'patch': (B, h*w, D)} (those `tokens` asks for), float32 on the CPU."""
    import torch

    with torch.inference_mode():
        if hasattr(model, "encode_image"):  # dino.txt: its image embedding (searchable by text) and head patch tokens
            cls, patch = model.get_visual_class_and_patch_tokens(x)
            out = {"cls": torch.cat([cls, patch.mean(dim=1)], dim=-1), "patch": patch}  # = encode_image(x), (B, 2D)
        else:
            f = model.forward_features(x)
            out = {"cls": f["x_norm_clstoken"], "patch": f["x_norm_patchtokens"]}
    return {k: out[k].float().cpu() for k in TOKEN_KEYS[tokens]}


def _empty(model: Any, size: int, tokens: str) -> dict[str, Any]:
    import torch

    D, hw = model.config.embed_dim, (size // model.patch_size) ** 2
    Dp = getattr(model, "vision_config", model.config).embed_dim  # dino.txt: patches are D wide, its embedding 2D
    shapes = {"cls": (0, D), "patch": (0, hw, Dp)}
    return {k: torch.zeros(shapes[k]) for k in TOKEN_KEYS[tokens]}


def _concat(parts: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    import torch

    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def _chunks(batches: range, per_chunk: int) -> Iterator[range]:
    for s in range(batches.start, batches.stop, per_chunk):
        yield range(s, min(s + per_chunk, batches.stop))


def run_embed(args: argparse.Namespace) -> int:
    """Check every argument, the inputs and the outputs before any work, then compute under the output's lock."""
    from ..utils.lock import lock_path
    from ..utils.transforms import IMAGE_EXTENSIONS
    from ._common import check_memory, preflight_model, weights_spec
    from .inputs import expand_inputs
    from .outputs import input_files, locked, plan_outputs

    out = Path(args.out)
    _check_suffix(out)
    if out.suffix.lower() == ".npy" and args.tokens == "both":
        raise SystemExit("minidino embed: a .npy file holds one array; use .safetensors or .npz for --tokens both")
    for name, value in (("--batch-size", args.batch_size), ("--checkpoint-every", args.checkpoint_every),
                        ("--workers", args.workers)):
        if value < 1:
            raise SystemExit(f"minidino embed: {name} must be >= 1, got {value}")
    config = preflight_model(args)
    P = config.patch_size
    if args.size < P or args.size % P:
        raise SystemExit(f"minidino embed: --size {args.size} is not a positive multiple of the patch size {P} "
                         f"(e.g. {max(P, args.size // P * P)})")
    if args.size > 4 * 1036:
        raise SystemExit(f"minidino embed: --size {args.size} is larger than 4144 pixels ({(args.size // P) ** 2} "
                         "patches per image); use a smaller size")
    # Two batches live at once (one computed, the next decoded), hence 2 x --batch-size.
    check_memory(args, 2 * args.batch_size, args.size, args.size, what=f"with --batch-size {args.batch_size}")
    shard = parse_shard(args.shard)
    target = shard_path(out, shard)
    parts_dir = target.with_name(target.name + ".parts")
    paths, list_failures = expand_inputs(args.inputs, exclude=[parts_dir])
    if not paths:  # a wrong folder would otherwise give an empty file and status 0
        report_failures(list_failures)
        raise SystemExit(f"minidino embed: no image files in {', '.join(map(display_name, args.inputs))} (folders are "
                         f"searched for {' '.join(IMAGE_EXTENSIONS)}; .txt files list paths); nothing was written")
    check_header_room(target, paths)
    outputs = [(target, "--out")] + ([(sidecar_path(target), "--out's metadata")] if out.suffix.lower() == ".npy" else [])
    weights = weights_spec(args)
    inputs = [(p, "input") for p in [*args.inputs, *paths]]
    inputs += [(f, "--weights") for f in input_files(weights)] if os.path.exists(weights) else []
    plan_outputs(outputs + [(lock_path(target), "the lock of --out")], inputs,
                 folders=[(parts_dir, "--out's checkpoint folder")])
    with locked(target):
        return _embed_locked(args, out, shard, target, paths, list_failures)


def _embed_locked(args: argparse.Namespace, out: Path, shard: tuple[int, int] | None, target: Path, paths: list[str],
                  list_failures: list[tuple[str, str]]) -> int:
    from ..utils.files import UnreadableFile, read_limited
    from ..utils.progress import ProgressBar
    from ..weights.download import content_url  # a signed URL's query (a credential) is not recorded
    from ._common import args_preprocessing, config_overrides, describe_weights, model_from_args, parse_dtype, weights_spec
    from .errors import ResumeHint

    report_failures(list_failures)
    B = args.batch_size
    n_batches = math.ceil(len(paths) / B)
    mine = shard_batches(n_batches, shard)
    per_chunk = max(1, args.checkpoint_every // B)
    names_digest = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    settings = {
        "format": FORMAT, "version": VERSION, "model": args.model, "weights": content_url(weights_spec(args)),
        "config": config_overrides(args), "size": args.size, "tokens": args.tokens, "dtype": str(parse_dtype(args.dtype)),
        "batch_size": B, "shard": list(shard) if shard else None, "inputs_total": len(paths),
        "inputs_sha256": names_digest,
    }
    parts_dir = target.with_name(target.name + ".parts")
    manifest_path = parts_dir / "manifest.json"
    manifest = dict(settings, batches_per_checkpoint=per_chunk)
    if parts_dir.exists():
        if not args.resume:
            raise SystemExit(f"minidino embed: {parts_dir} holds checkpoints of an interrupted run: add --resume to "
                             "continue it, or delete the folder to start again")
        try:
            old = json.loads(read_limited(manifest_path, 2**20)) if manifest_path.exists() else {}
        except (UnreadableFile, ValueError):
            old = {"manifest": "unreadable"}
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise SystemExit(f"minidino embed: --resume: the checkpoints in {parts_dir} were made with other settings "
                             f"({', '.join(diff)} differ); rerun with the same inputs and options, or delete the folder")
    elif args.resume and target.is_file():
        _, meta = read_embeddings(target)
        if {k: meta.get(k) for k in settings} == settings:
            log(f"--resume: {target} is already complete ({len(meta['names'])} images); nothing to do")
            return 1 if meta["skipped"] else 0

    model = model_from_args(args)
    model = getattr(model, "backbone", model)  # a *_lc classifier: embed with its backbone
    device = next(model.parameters()).device
    dtype = parse_dtype(args.dtype)
    log(f"{args.model}, {describe_weights(args)}; {len(paths)} inputs"
        + (f", shard {shard[0]}/{shard[1]}: " + (f"batches {mine.start}..{mine.stop - 1} of {n_batches}" if len(mine)
                                                 else f"none of the {n_batches} batches (fewer batches than shards)")
           if shard else "")
        + f", {args.size}x{args.size} px, {args.tokens} tokens, on {device} in {args.dtype}")
    fresh = not parts_dir.exists()  # a run that fails before its first checkpoint leaves no folder behind
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not manifest_path.is_file():
        atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))

    transform = embed_transform(args.size, args_preprocessing(args))
    keys = TOKEN_KEYS[args.tokens]
    chunks = list(_chunks(mine, per_chunk))
    done = {c.start for c in chunks if _part_ok(parts_dir / f"part-{c.start:09d}.safetensors", keys,
                                                  min(len(paths), c.stop * B) - c.start * B)}
    if done:
        n_done = sum(min(len(paths), c.stop * B) - c.start * B for c in chunks if c.start in done)
        log(f"resume: {len(done)} of {len(chunks)} checkpoints already written ({n_done} images); "
            f"computing the other {len(chunks) - len(done)}")
    todo_images = sum(min(len(paths), c.stop * B) - c.start * B for c in chunks if c.start not in done)
    progress = ProgressBar("embed", todo_images, unit="images", enabled=not args.quiet)
    workers = max(1, args.workers)
    try:
        with ThreadPoolExecutor(workers) as pool:
            _compute_chunks(args, model, pool, paths, chunks, done, transform, keys, parts_dir, progress, device, dtype)
    except KeyboardInterrupt:
        n = len(list(parts_dir.glob("part-*.safetensors")))
        if fresh and not n:
            shutil.rmtree(parts_dir, ignore_errors=True)
        raise ResumeHint(f"{n} of {len(chunks)} checkpoints are saved in {parts_dir}: rerun the same command with "
                         "--resume to continue from there" if n else "no checkpoint was written yet; rerun the "
                         "same command") from None
    except BaseException:
        if fresh and not any(parts_dir.glob("part-*.safetensors")):
            shutil.rmtree(parts_dir, ignore_errors=True)
        raise
    progress.close()
    return _status(args, shard, _finish(args, model, target, parts_dir, chunks, keys, settings, shard, list_failures))


def _compute_chunks(args: argparse.Namespace, model: Any, pool: ThreadPoolExecutor, paths: list[str], chunks: list[range],
                    done: set[int], transform: Any, keys: Sequence[str], parts_dir: Path, progress: Any, device: Any,
                    dtype: Any) -> int:
    """Compute and write the checkpoints not yet done; returns how many were written."""
    import torch

    B, written = args.batch_size, 0

    def submit(b: int) -> list[Future]:
        return [pool.submit(_decode, p, transform, args.size) for p in paths[b * B:(b + 1) * B]]

    for chunk in chunks:
        if chunk.start in done:
            continue
        results: list[dict[str, Any]] = []
        names: list[str] = []
        skipped: list[list[str]] = []
        pending = submit(chunk.start)
        for b in chunk:
            decoded = [f.result() for f in pending]
            pending = submit(b + 1) if b + 1 in chunk else []  # decode the next batch while the model runs
            good = []
            for path, (x, reason) in zip(paths[b * B:(b + 1) * B], decoded):
                if x is None:
                    report_failures([(path, reason or "unreadable")])
                    skipped.append([path, reason or "unreadable"])
                else:
                    good.append((path, x))
            if good:
                x = torch.stack([x for _, x in good]).to(device=device, dtype=dtype)  # (B', 3, S, S)
                result = embed_tensor(model, x, args.tokens)
                finite = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in result.values()]).all(0)  # (B',)
                for (path, _), ok in zip(good, finite.tolist()):
                    if not ok:  # never written: named and skipped like an unreadable input
                        report_failures([(path, NOT_FINITE)])
                        skipped.append([path, NOT_FINITE])
                results.append({k: v[finite] for k, v in result.items()})
                names += [p for (p, _), ok in zip(good, finite.tolist()) if ok]
            progress.update(len(decoded))
        part = _concat(results, keys) if results else _empty(model, args.size, args.tokens)
        _write_part(parts_dir / f"part-{chunk.start:09d}.safetensors", part, names, skipped)
        written += 1
    return written


def _finish(args: argparse.Namespace, model: Any, target: Path, parts_dir: Path, chunks: list[range],
            keys: Sequence[str], settings: dict[str, Any], shard: tuple[int, int] | None,
            list_failures: list[tuple[str, str]]) -> int:
    """Join the checkpoints into the output file; returns the number of skipped inputs."""
    tensors, names, skipped = _read_parts([parts_dir / f"part-{c.start:09d}.safetensors" for c in chunks], keys)
    if not names and not tensors:
        tensors = _empty(model, args.size, args.tokens)
    if tensors is None or any(len(v) != len(names) for v in tensors.values()):
        raise SystemExit(f"minidino embed: the checkpoints in {parts_dir} are inconsistent; delete the folder and rerun")
    if not names and skipped and all(reason == NOT_FINITE for _, reason in skipped):
        shutil.rmtree(parts_dir)
        fail(f"minidino embed: the model gives NaN or infinite values for all {len(skipped)} images (the weights, "
             "--config, or a --dtype float16 overflow); nothing was written", EXIT_WEIGHTS)
    if shard is None or shard[0] == 0:  # folders that could not be listed: reported once, by the first shard
        skipped = [list(f) for f in list_failures] + skipped
    meta = dict(settings, names=names, skipped=skipped)
    write_embeddings(target, tensors, meta)
    shutil.rmtree(parts_dir)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    print(f"wrote {target}: {len(names)} images ({shapes})"
          + (f"; {len(skipped)} unreadable file(s) skipped: {', '.join(display_name(p) for p, _ in skipped)}"
             if skipped else ""))
    return len(skipped)


def _status(args: argparse.Namespace, shard: tuple[int, int] | None, n_skipped: int) -> int:
    if n_skipped and args.shard == "auto" and shard is not None:
        # Under torchrun a rank that exits non-zero makes the launcher kill the others mid-work, so
        # the skipped files only go into the metadata here, and `merge` reports them with status 1.
        log("exit status 0 under torchrun despite the skipped files (so the other ranks run on); "
            "`minidino merge` lists them and exits 1")
        return 0
    return 1 if n_skipped else 0


def _part_ok(path: Path, keys: Sequence[str], n_inputs: int) -> bool:
    """Whether a checkpoint of an earlier run is complete and readable; a bad one is removed (and recomputed)."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as h:
            meta = json.loads(h.metadata()["minidino"])
            lengths = {k: h.get_slice(k).get_shape()[0] for k in keys}
        ok = all(n == len(meta["names"]) for n in lengths.values()) and len(meta["names"]) + len(meta["skipped"]) == n_inputs
    except Exception:
        ok = False
    if not ok:
        log(f"resume: checkpoint {path} is corrupt or incomplete; it is computed again")
        path.unlink(missing_ok=True)
    return ok


def _write_part(path: Path, tensors: dict[str, Any], names: list[str], skipped: list[list[str]]) -> None:
    from safetensors.torch import save_file

    meta = json.dumps({"names": names, "skipped": skipped})
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"minidino": meta}))


def _read_parts(files: list[Path], keys: Sequence[str]) -> tuple[dict[str, Any], list[str], list[list[str]]]:
    from safetensors import safe_open

    parts, names, skipped = [], [], []
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            meta = json.loads(h.metadata()["minidino"])
            parts.append({k: h.get_tensor(k) for k in keys})
        names += meta["names"]
        skipped += meta["skipped"]
    return _concat(parts, keys) if parts else {}, names, skipped


# ------------------------------------------------------------------ merge
def run_merge(args: argparse.Namespace) -> int:
    """Check the output against the shards, then every shard against its own metadata (read_embeddings) and
    against the others (settings, shard numbers, keys, widths), all before anything is written."""
    import torch

    from ..utils.lock import lock_path
    from .outputs import locked, plan_outputs

    out = Path(args.out)
    _check_suffix(out)
    outputs = [(out, "--out")] + ([(sidecar_path(out), "--out's metadata")] if out.suffix.lower() == ".npy" else [])
    plan_outputs(outputs + [(lock_path(out), "the lock of --out")], [(f, "shard") for f in args.shards])
    loaded = [(f, *read_embeddings(f)) for f in args.shards]
    ignore = ("shard", "names", "skipped")
    first_file, first_tensors, first = loaded[0]
    base = {k: v for k, v in first.items() if k not in ignore}
    seen: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for f, tensors, meta in loaded:
        other = {k: v for k, v in meta.items() if k not in ignore}
        if other != base:
            diff = sorted(k for k in set(other) | set(base) if other.get(k) != base.get(k))
            raise SystemExit(f"minidino merge: {f} was made with other settings than {first_file} ({', '.join(diff)} differ)")
        if meta.get("shard") is None:
            raise SystemExit(f"minidino merge: {f} is not a shard (made without --shard)")
        I, N = meta["shard"]
        if N != first["shard"][1]:
            raise SystemExit(f"minidino merge: {f} is shard {I} of {N} but {first_file} is one of {first['shard'][1]}: "
                             "not shards of one run")
        if I in seen:
            raise SystemExit(f"minidino merge: {f} and {seen[I][0]} are both shard {I}/{N}")
        shapes = {k: tuple(v.shape[1:]) for k, v in tensors.items()}
        want = {k: tuple(v.shape[1:]) for k, v in first_tensors.items()}
        if shapes != want:
            raise SystemExit(f"minidino merge: {f} holds {shapes} per image but {first_file} holds {want}: not shards "
                             "of one run")
        seen[I] = (f, tensors, meta)
    N = first["shard"][1]
    missing = list(itertools.islice((i for i in range(N) if i not in seen), 5))  # a forged N of 10**12 costs nothing
    if missing:
        raise SystemExit(f"minidino merge: incomplete set of {N} shards ({len(seen)} given): missing "
                         f"{', '.join(f'{i}/{N}' for i in missing)}{', ...' if N - len(seen) > len(missing) else ''}")
    ordered = [seen[i] for i in range(N)]
    keys = list(ordered[0][1])
    names = [n for _, _, m in ordered for n in m["names"]]
    skipped = [s for _, _, m in ordered for s in m["skipped"]]
    check_header_room(out, names)
    tensors = {k: torch.cat([t[k] for _, t, _ in ordered]) for k in keys}
    meta = dict(base, shard=None, names=names, skipped=skipped)
    with locked(out):
        out = write_embeddings(out, tensors, meta)
    print(f"wrote {out}: {len(names)} images from {N} shards"
          + (f"; {len(skipped)} unreadable file(s) were skipped: {', '.join(p for p, _ in skipped)}" if skipped else ""))
    return 1 if skipped else 0  # as a single embed run of the whole corpus would


# ------------------------------------------------------------------ parsers
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed images (files, folders, lists) into a .safetensors / .npz / .npy file",
        description="Compute DINOv2 embeddings of many images. INPUTS are image files, folders (walked "
                    "recursively in sorted order, image extensions only) or .txt lists of paths (one a line). Every "
                    "image is resized so its shorter side is SIZE*256/224 (bicubic), centre-cropped to SIZExSIZE (the "
                    "official evaluation recipe; 224 -> 256 -> 224) and normalised with the mean and std of the weights "
                    "(ImageNet's; those of DINOv3's SAT-493M satellite weights for them). "
                    "The output stores the class tokens ('cls', N x D: the image embedding for retrieval, k-NN, "
                    "linear probes) and/or the patch tokens ('patch', N x h*w x D), the file names in order and "
                    "the model and weights used, as float32. Unreadable images are reported by name and skipped; "
                    "the rest is written and the exit status is 1. The output is written atomically; checkpoints "
                    "every --checkpoint-every images let --resume continue an interrupted run. --shard I/N computes "
                    "a deterministic 1/N share (to OUT.shard-I-of-N.EXT); `minidino merge` joins the shards into "
                    "exactly the file a single run writes (use the same --batch-size). Two runs never write the same "
                    "OUT at once: the second stops with exit status 5. Exit statuses: 0 done, 1 some inputs skipped, "
                    "2 bad argument, 3 bad weights, 4 download failed, 5 OUT busy, 6 no memory/device, 7 cannot "
                    "write, 130 interrupted (rerun with --resume); see `minidino --help` and docs/cli-errors.md.",
        epilog="examples:\n"
               "  minidino embed photos/ --out photos.safetensors\n"
               "  minidino embed list.txt --out emb.npz --tokens both --size 448 --device cuda --dtype bfloat16\n"
               "  minidino embed photos/ --out emb.safetensors --shard 0/2   # and 1/2 elsewhere, then:\n"
               "  minidino merge emb.shard-0-of-2.safetensors emb.shard-1-of-2.safetensors --out emb.safetensors\n"
               "  torchrun --nproc-per-node 8 -m minidino embed photos/ --out emb.safetensors --shard auto",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or .txt files listing paths")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="output file: .safetensors, .npz, or .npy (one array, metadata in FILE.json)")
    p.add_argument("--tokens", choices=["cls", "patch", "both"], default="cls",
                   help="what to store: class tokens (N, D), patch tokens (N, h*w, D) or both (default cls)")
    p.add_argument("--size", type=int, default=224,
                   help="side of the square crop in pixels, a multiple of 14 (default 224: 16x16 patches)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads decoding images while the model runs (default: min(8, CPUs))")
    p.add_argument("--checkpoint-every", type=int, default=1024, metavar="N",
                   help="write a checkpoint (OUT.parts/) about every N images (default 1024)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoints instead of starting again")
    p.add_argument("--shard", default=None, metavar="I/N|auto",
                   help="compute only share I of N (0 <= I < N) into OUT.shard-I-of-N.EXT; 'auto' reads RANK and "
                        "WORLD_SIZE (torchrun; there the exit status stays 0 when files are skipped, so that the "
                        "other ranks are not stopped: merge reports them)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run_embed)

    m = sub.add_parser(
        "merge", help="join the shard files of `embed --shard` into one file",
        description="Join the outputs of `minidino embed --shard I/N` (all N of them, any order) into one file, "
                    "identical to what a single `minidino embed` run with the same options writes. The shards must "
                    "come from the same inputs, model, weights and options; the output format follows --out's "
                    "suffix (.safetensors, .npz, .npy). The exit status is 1 when the shards skipped unreadable files "
                    "(they are listed), as for a single run.",
        epilog="example:\n  minidino merge emb.shard-*-of-4.safetensors --out emb.safetensors",
        formatter_class=HelpFormatter,
    )
    m.add_argument("shards", nargs="+", metavar="SHARD", help="the shard files (emb.shard-I-of-N.EXT)")
    m.add_argument("-o", "--out", required=True, metavar="FILE", help="the merged file")
    m.set_defaults(func=run_merge)
