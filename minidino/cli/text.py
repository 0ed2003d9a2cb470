"""dino.txt commands: `zeroshot` (labels in words), `embed-text` (sentences -> embeddings), `segment`.

All three build dino.txt (`--model dinotxt`, the default) with the usual model options, turn
texts into token ids with minidino.tokenize (CLIP's vocabulary: a copy on this machine, else one
download into the cache, checked before any model is built; --vocab FILE uses a given copy) and
compare normalised embeddings by cosine.

They follow docs/cli-errors.md like every command: all arguments (labels, templates, sizes,
model options, --vocab) and the output are checked before any work (`check_args`,
minidino.cli.outputs), outputs are locked and written atomically, and images are read by the
shared reader (minidino.cli.inputs): an image that cannot be read is named on stderr and
skipped, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._common import HelpFormatter, add_model_args

DEFAULT_TEMPLATE = "{}"


# ------------------------------------------------------------------ shared pieces
BATCH = 32  # texts tokenised and encoded at once: memory stays flat whatever the number of texts


def check_args(args: argparse.Namespace, command: str) -> Any:
    """Check the options every text command shares, before any work: --model is dino.txt, its other model
    options (minidino.cli._common.preflight_model: config ranges, memory), and that its text encoder takes
    the ids CLIP's tokenizer gives. Returns the vision trunk's DinoConfig. (The --vocab file itself is
    checked by `check_vocab`, once every other argument has been.)"""
    from ..catalogue import task_of
    from ..heads import DinoTxtConfig
    from ..heads.tokenizer import VOCAB_SIZE
    from ._common import config_overrides, preflight_model, resolve_model

    if not args.model or task_of(args.model) != "dinotxt":
        raise SystemExit(f"minidino {command}: {args.model} has no text encoder; use --model dinotxt")
    if args.vocab is not None and not os.path.lexists(args.vocab):
        raise SystemExit(f"minidino {command}: --vocab {args.vocab}: no such file; give CLIP's "
                         "bpe_simple_vocab_16e6.txt.gz, or leave --vocab out to use the copy on this machine")
    config = preflight_model(args)
    text = DinoTxtConfig().replace(**resolve_model(args.model, config_overrides(args)).head)
    if text.text_vocab_size != VOCAB_SIZE:
        raise SystemExit(f"minidino {command}: --config text_vocab_size={text.text_vocab_size}: CLIP's tokenizer gives "
                         f"ids 0..{VOCAB_SIZE - 1} and ends every text with {VOCAB_SIZE - 1}; the text encoder must "
                         f"take {VOCAB_SIZE} ids")
    if args.vocab is None:  # before any model is built: a copy on this machine, else one download, else one line saying how
        from ..weights.vocab import vocab_path

        args.vocab = str(vocab_path())
    return config


def check_vocab(args: argparse.Namespace, command: str) -> None:
    """--vocab, read and checked before the work (a regular gzip file of bounded size holding CLIP's
    byte-pair merges: minidino.heads.tokenizer.read_vocabulary); one line naming it otherwise, status 2.
    Without --vocab, the cached official file is used (downloaded once, checked against its SHA-256)."""
    from ..weights.vocab import get_tokenizer

    if args.vocab is None:
        return
    try:
        get_tokenizer(args.vocab)  # kept: tokenising later reads nothing again
    except (ImportError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"minidino {command}: --vocab: {' '.join(str(e).split())}") from None


def read_labels(args: argparse.Namespace, most: int | None = None) -> list[str]:
    """--labels "a,b,c" and/or --labels-file (one label a line; # comments; read safely: a regular text
    file of at most 64 MiB), stripped, empty ones dropped; at most `most` of them."""
    from .inputs import read_text_file

    labels: list[str] = []
    if args.labels is not None:
        labels += [s.strip() for s in args.labels.split(",")]
    if args.labels_file is not None:
        lines = read_text_file(args.labels_file, "--labels-file")
        labels += [line.strip() for line in lines if not line.strip().startswith("#")]
    labels = [lab for lab in labels if lab]
    if not labels:
        raise SystemExit("minidino: no labels: give --labels \"a cat,a dog\" or --labels-file FILE (one label a line)")
    if len(set(labels)) != len(labels):
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})[:10]
        raise SystemExit(f"minidino: labels given twice: {', '.join(map(repr, dup))}")
    if most is not None and len(labels) > most:
        raise SystemExit(f"minidino: {len(labels)} labels; at most {most} can be told apart by colour")
    return labels


def prompts(labels: list[str], templates: list[str]) -> list[list[str]]:
    """For each label, its sentences: every template with {} replaced by the label."""
    for t in templates:
        if t.count("{}") != 1:
            raise SystemExit(f"minidino: --template must contain {{}} exactly once (where the label goes), got {t!r}")
    return [[t.replace("{}", lab) for t in templates] for lab in labels]


def dinotxt_from_args(args: argparse.Namespace) -> Any:
    from ..heads.dinotxt import DinoTxt
    from ._common import model_from_args

    model = model_from_args(args)
    if not isinstance(model, DinoTxt):
        raise SystemExit(f"minidino: {args.model} has no text encoder; use --model dinotxt")
    return model


def encode_texts(model: Any, texts: list[str], vocab: str | None, batch_size: int = BATCH) -> Any:
    """(T, E) unit-length text embeddings, tokenised and encoded `batch_size` texts at a time; results
    that are not finite end the run (status 3, nothing written: minidino.cli._common.require_finite)."""
    import torch

    from ..weights.vocab import tokenize
    from ._common import require_finite

    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        try:
            ids = tokenize(texts[i:i + batch_size], model.config.text_context_length, vocab_file=vocab)
        except (ImportError, FileNotFoundError, TypeError, ValueError) as e:
            raise SystemExit(f"minidino: {e}") from e
        with torch.inference_mode():
            emb = model.encode_text(ids.to(device), normalize=True).float().cpu()  # (b, E)
        require_finite(emb, "the text embeddings")
        out.append(emb)
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


def label_embeddings(model: Any, labels: list[str], templates: list[str], vocab: str | None) -> Any:
    """(T, E): per label, the normalised mean of its prompts' normalised embeddings (CLIP's prompt ensemble),
    encoded in batches."""
    import torch.nn.functional as F

    groups = prompts(labels, templates)
    flat = encode_texts(model, [s for g in groups for s in g], vocab)  # (T * P, E)
    return F.normalize(flat.view(len(labels), len(templates), -1).mean(dim=1), dim=-1)


def _add_text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", default=None, metavar="FILE",
                   help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: a copy on this machine (the cache, or the one "
                        "clip-anytorch / open_clip ship), else downloaded once from the official URL; checked "
                        "against its SHA-256)")
    add_model_args(p, default_model="dinotxt")


def _add_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, metavar="A,B,C", help="labels in words, separated by commas")
    p.add_argument("--labels-file", default=None, metavar="FILE",
                   help="labels, one a line (# starts a comment; a UTF-8 text file of at most 64 MiB)")
    p.add_argument("--template", action="append", default=None, metavar="TEXT",
                   help='prompt template with {} for the label, e.g. "a photo of a {}"; repeat it to average '
                        "several (default: the label alone)")


# ------------------------------------------------------------------ zeroshot
def _inputs(args: argparse.Namespace, *images: str) -> list[tuple[str, str]]:
    """What a text command reads, for the output planner (minidino.cli.outputs.plan_outputs)."""
    from ._common import weights_spec
    from .outputs import input_files

    named = [(p, "input image") for p in images]
    for option, value in (("--labels-file", getattr(args, "labels_file", None)),
                          ("--texts-file", getattr(args, "texts_file", None)), ("--vocab", args.vocab)):
        if value is not None:
            named.append((value, option))
    weights = weights_spec(args)
    if os.path.exists(weights):
        named += [(f, "--weights") for f in input_files(weights)]
    return named


def run_zeroshot(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ._common import NOT_FINITE, args_preprocessing, check_memory, describe_weights, weights_spec
    from .embed import embed_transform
    from .errors import EXIT_PARTIAL, EXIT_WEIGHTS, fail
    from .inputs import display_name, read_one, report_failures

    labels = read_labels(args)
    templates = args.template or [DEFAULT_TEMPLATE]
    prompts(labels, templates)  # checks the templates now, not after the model is built
    if args.top < 1:
        raise SystemExit(f"minidino zeroshot: --top must be >= 1, got {args.top}")
    P = check_args(args, "zeroshot").patch_size
    if not P <= args.size <= 4144 or args.size % P:
        raise SystemExit(f"minidino zeroshot: --size {args.size} must be a multiple of the patch size {P} between "
                         f"{P} and 4144 pixels (e.g. {min(4144, max(P, args.size // P * P))})")
    check_memory(args, 1, args.size, args.size)
    check_vocab(args, "zeroshot")
    model = dinotxt_from_args(args)
    text = label_embeddings(model, labels, templates, args.vocab)  # (T, E)
    transform = embed_transform(args.size, args_preprocessing(args))
    if weights_spec(args).startswith("random:"):  # the probabilities below say nothing about real images
        print(f"# {args.model}, {describe_weights(args)}")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    scale = model.logit_scale.detach().exp().float()
    failed = not_finite = 0
    for path in args.images:  # one at a time: any number of images in constant memory
        x, reason = read_one(path, transform)
        if x is None:
            failed += report_failures([(path, reason)])
            continue
        with torch.inference_mode():
            image = model.encode_image(x.unsqueeze(0).to(device=device, dtype=dtype), normalize=True).float()  # (1, E)
        probs = (scale * image @ text.T).softmax(dim=-1)[0]  # (T,), as softmax over get_logits' row
        if not bool(torch.isfinite(probs).all()):  # never printed as "nan%"
            failed += report_failures([(path, NOT_FINITE)])
            not_finite += 1
            continue
        values, order = probs.topk(min(args.top, len(labels)))
        print(display_name(path))
        for v, j in zip(values.tolist(), order.tolist()):
            print(f"  {100 * v:6.2f}%  {labels[j]}")
        sys.stdout.flush()
    if not_finite and failed == len(args.images):
        fail(f"minidino zeroshot: the model gives NaN or infinite values for {'all ' if not_finite > 1 else ''}"
             f"{not_finite} image(s) (the weights, --config, or a --dtype float16 overflow)", EXIT_WEIGHTS)
    if failed:
        print(f"minidino zeroshot: {failed} of {len(args.images)} images could not be classified (named above)",
              file=sys.stderr)
    return EXIT_PARTIAL if failed else 0


# ------------------------------------------------------------------ embed-text
def run_embed_text(args: argparse.Namespace) -> int:
    from ..utils.lock import lock_path
    from ._common import config_overrides, weights_spec
    from .embed import FORMAT, VERSION, _check_suffix, check_header_room, sidecar_path, write_embeddings
    from .inputs import read_text_file
    from .outputs import locked, plan_outputs

    texts = list(args.texts)
    if args.texts_file:
        texts += [t for t in read_text_file(args.texts_file, "--texts-file") if t.strip()]
    if not texts:
        raise SystemExit("minidino embed-text: no texts: give them as arguments or with --texts-file")
    if args.batch_size < 1:
        raise SystemExit(f"minidino embed-text: --batch-size must be >= 1, got {args.batch_size}")
    check_args(args, "embed-text")
    out = Path(args.out)
    _check_suffix(out)
    check_header_room(out, texts)
    outputs = [(out, "--out")] + ([(sidecar_path(out), "--out's metadata")] if out.suffix.lower() == ".npy" else [])
    plan_outputs(outputs + [(lock_path(out), "the lock of --out")], _inputs(args))
    check_vocab(args, "embed-text")
    with locked(out):
        model = dinotxt_from_args(args)
        emb = encode_texts(model, texts, args.vocab, args.batch_size)  # (T, E), batch by batch
        meta = {"format": FORMAT, "version": VERSION, "model": args.model, "weights": weights_spec(args),
                "config": config_overrides(args), "tokens": "text", "names": texts, "skipped": []}
        write_embeddings(out, {"text": emb}, meta)
    print(f"wrote {args.out}: {len(texts)} text embeddings of width {emb.shape[1]} (unit length)")
    return 0


# ------------------------------------------------------------------ segment
def run_segment(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..heads.dinotxt import patch_text_similarity
    from ..utils import figures, viz
    from ..utils.atomic import atomic_write
    from ..utils.lock import lock_path
    from ._common import args_preprocessing, check_memory, describe_weights, require_finite, weights_spec
    from .errors import EXIT_PARTIAL
    from .inputs import DENSE_LIMITS, dense_transform_checked, display_name, read_images, report_failures
    from .outputs import locked, plan_outputs
    from .pca import check_dense_size, picture_format

    labels = read_labels(args, most=len(figures.LABEL_COLOURS))
    templates = args.template or [DEFAULT_TEMPLATE]
    prompts(labels, templates)
    P = check_args(args, "segment").patch_size
    check_dense_size(args.size, P, "segment")
    out = Path(args.output)
    fmt = picture_format(out)
    plan_outputs([(out, "--output"), (lock_path(out), "the lock of --output")], _inputs(args, args.image))
    check_vocab(args, "segment")
    stats = args_preprocessing(args)
    with locked(out):
        items, failures = read_images([args.image], dense_transform_checked(args.size, "resize", P, preprocessing=stats),
                                      limits=DENSE_LIMITS)
        if failures:
            report_failures(failures, what="cannot read")
            print("minidino segment: nothing written", file=sys.stderr)
            return EXIT_PARTIAL
        x = items[0][1]  # (3, H, W)
        H, W = x.shape[-2:]
        check_memory(args, 1, H, W, what=f"at {W}x{H} px")
        model = dinotxt_from_args(args)
        text = label_embeddings(model, labels, templates, args.vocab)  # (T, E)
        h, w = H // P, W // P
        with torch.inference_mode():
            _, patches = model.get_visual_class_and_patch_tokens(
                x.unsqueeze(0).to(device=next(model.parameters()).device, dtype=next(model.parameters()).dtype))
        require_finite(patches, f"the patch features of {display_name(args.image)}")
        sim = patch_text_similarity(patches.float().cpu(), text.cpu())[0].view(len(labels), h, w)  # (T, h, w)
        picture, shares = figures.segmentation_figure(viz.denormalize(x, stats.mean, stats.std), sim, labels,
                                                  caption=f"{args.model}, {describe_weights(args)}")
        atomic_write(out, lambda tmp: picture.save(tmp, format=fmt))
    if weights_spec(args).startswith("random:"):
        print(f"# {args.model}, {describe_weights(args)}")
    for lab, s in sorted(zip(labels, shares), key=lambda p: -p[1]):
        print(f"  {100 * s:5.1f}%  {lab}")
    print(f"wrote {out} ({picture.width}x{picture.height} px, {h}x{w} patches)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    z = sub.add_parser(
        "zeroshot", help="classify images against labels written in words (dino.txt)",
        description="Zero-shot classification with dino.txt: every image (resized to --size*256/224, centre crop "
                    "--size) and every label (put into the --template sentences) are embedded, and the softmax of "
                    "the scaled cosines (the model's logits) gives one probability per label. Prints the --top labels "
                    "of each image.",
        epilog='examples:\n  minidino zeroshot cat.jpg dog.png --labels "a cat,a dog,a car"\n'
               '  minidino zeroshot photos/*.jpg --labels-file labels.txt --template "a photo of a {}."',
        formatter_class=HelpFormatter,
    )
    z.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (one that cannot be read is named on stderr and skipped; exit status 1)")
    _add_label_args(z)
    z.add_argument("--top", "-k", type=int, default=5, help="how many labels to print per image (default 5)")
    z.add_argument("--size", type=int, default=224, help="crop size in pixels, a multiple of 14 (default 224)")
    _add_text_args(z)
    z.set_defaults(func=run_zeroshot)

    t = sub.add_parser(
        "embed-text", help="embed sentences with dino.txt's text encoder (search an image index with them)",
        description="Write unit-length dino.txt text embeddings (key 'text', T x 2048) and the texts, in the format "
                    "of `minidino embed`, encoding --batch-size texts at a time. An image index made with "
                    "`minidino embed --model dinotxt` holds image embeddings of the same space: "
                    "`minidino similar --text \"...\" INDEX` searches it.",
        epilog='example:\n  minidino embed-text "a red car" "a dog on a beach" --out queries.safetensors',
        formatter_class=HelpFormatter,
    )
    t.add_argument("texts", nargs="*", metavar="TEXT", help="sentences")
    t.add_argument("--texts-file", default=None, metavar="FILE",
                   help="more sentences, one a line (a UTF-8 text file of at most 64 MiB)")
    t.add_argument("-o", "--out", required=True, metavar="FILE", help="output .safetensors, .npz or .npy")
    t.add_argument("--batch-size", type=int, default=BATCH, help=f"texts encoded at once (default {BATCH})")
    _add_text_args(t)
    t.set_defaults(func=run_embed_text)

    s = sub.add_parser(
        "segment", help="picture where each label is in an image (dino.txt patch features vs text)",
        description="Open-vocabulary segmentation with dino.txt: the image is resized to about --size pixels (sides "
                    "multiples of 14), each patch token of the vision head is compared by cosine with the patch half "
                    "of every label's text embedding, the similarity maps are upsampled bilinearly to the pixels and "
                    "each pixel takes its best label. Writes [image | colours over the image | legend with each "
                    "label's share]. Give a background label (e.g. 'background') so that not everything is forced "
                    "into an object label.",
        epilog='example:\n  minidino segment street.jpg --labels "a car,a person,a tree,the sky,the road" -o seg.png',
        formatter_class=HelpFormatter,
    )
    s.add_argument("image", metavar="IMAGE", help="an image file")
    _add_label_args(s)
    s.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the picture")
    s.add_argument("--size", type=int, default=448, help="target size in pixels, rounded to a multiple of 14 (default 448)")
    _add_text_args(s)
    s.set_defaults(func=run_segment)
