"""Which published weight set a command's model options load, and the image statistics it expects.

    preprocessing_of("dinov3_vitl16", "/w/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth")   # catalogue.SATELLITE
    preprocessing_of("dinov2_vits14", "official")                                          # catalogue.IMAGENET

The set is the factory's choice (minidino.factory.resolve), never a table of its own: `weights=`
among the overrides (`--config weights=SAT493M`; the depth command's NYU and KITTI) names it; else a
file's or URL's name picks the set whose hash it carries (`-eadcf0ff.pth`: the satellite ViT-L), as
`create_model(name, pretrained=PATH)` does; else (`official`, `random:SEED`, any other name) it is
the default set. Its `preprocessing` (minidino.catalogue.Preprocessing) is what the commands
normalise images with, and denormalise them with in their pictures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["weight_set", "preprocessing_of", "normalisation_note", "weight_sets", "sets_hint",
           "unnamed_set_note", "note_unnamed_set", "explain_mismatch"]


def _default(weights: str) -> bool:
    """`official` and random weights: the default set (unless --config weights= names one)."""
    return weights in ("official", "random") or weights.startswith("random:")


def weight_set(name: str, weights: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The catalogue's Weights row the model options load (`weights` a weights_spec string or a set's name),
    as the factory picks it. ValueError / TypeError for options the factory refuses."""
    from ..factory import resolve

    overrides = dict(overrides or {})
    if "weights" not in overrides and not _default(weights):
        overrides["weights"] = weights  # a file's or URL's name picks its set, as create_model(pretrained=PATH) does
    return resolve(name, **overrides).weights


def preprocessing_of(name: str, weights: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The catalogue's Preprocessing (mean, std) of the weights `build_model(name, weights, overrides)`
    (minidino.cli._common) loads: that of `weight_set`. `official`, `random[:SEED]` and a file or URL
    whose name carries no published set's hash: the default set's (ImageNet statistics, for every
    model of the catalogue). An invalid choice is one line (status 2).

    Examples:
        >>> preprocessing_of("dinov3_vitl16", "/w/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth").mean
        (0.43, 0.411, 0.296)
        >>> preprocessing_of("dinov3_vitl16", "/w/mine.pth", {"weights": "SAT493M"}).std   # --config weights=SAT493M
        (0.213, 0.156, 0.143)
        >>> preprocessing_of("dinov3_vitl16", "random:0").mean, preprocessing_of("dinov2_vits14", "official").mean
        ((0.485, 0.456, 0.406), (0.485, 0.456, 0.406))
    """
    try:
        return weight_set(name, weights, overrides).preprocessing
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"minidino: {' '.join(str(e).split())}") from None


def normalisation_note(name: str, weights: str, overrides: Mapping[str, Any] | None = None) -> str:
    """' (SAT493M normalisation)' when the weights expect other statistics than ImageNet's, else '' (for labels).

    Examples:
        >>> normalisation_note("dinov3_vitl16", "/w/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"), normalisation_note("dinov2_vits14", "official")
        (' (SAT493M normalisation)', '')
    """
    from ..catalogue import IMAGENET

    try:
        picked = weight_set(name, weights, overrides)
    except (ValueError, TypeError, KeyError):
        return ""  # a label never fails: the options are checked (and reported) elsewhere
    return "" if picked.preprocessing == IMAGENET else f" ({picked.name} normalisation)"


def weight_sets(name: str) -> tuple[Any, ...]:
    """The published weight sets of model `name` (none for an unknown name)."""
    from ..catalogue import lookup

    try:
        return lookup(name).weights
    except ValueError:
        return ()


def sets_hint(name: str) -> str:
    """How the command line tells the weight sets of `name` apart (for a model with several).

    Examples:
        >>> sets_hint("dinov3_vit7b16")
        'a dinov3_vit7b16 file is the set whose hash its name carries (-a955f4ea.pth LVD1689M, -a6675841.pth SAT493M), else LVD1689M; --config weights=SET names it'
    """
    from ..catalogue import file_hash

    sets = weight_sets(name)
    files = ", ".join(f"-{file_hash(w.files.get('backbone', ''))}.pth {w.name}" for w in sets)
    return f"a {name} file is the set whose hash its name carries ({files}), else {sets[0].name}; --config weights=SET names it"


def unnamed_set_note(name: str, weights: str, overrides: Mapping[str, Any]) -> str | None:
    """For a file or URL of a model whose weight sets expect different statistics (DINOv3's ViT-L and 7B),
    whose name carries none of the sets' hashes, with no `--config weights=`: which set it is taken for, and
    why (the commands print it once, on stderr). None otherwise.

    Examples:
        >>> unnamed_set_note("dinov3_vit7b16", "/w/my_7b.pth", {})[:70]
        'my_7b.pth is taken for LVD1689M weights and normalised with their mean'
        >>> unnamed_set_note("dinov3_vit7b16", "/w/dinov3_vit7b16_pretrain_sat493m-a6675841.pth", {}) is None
        True
    """
    from ..catalogue import file_hash

    sets = weight_sets(name)
    if _default(weights) or "weights" in overrides or len({w.preprocessing for w in sets}) < 2:
        return None
    digest = file_hash(weights.split("?", 1)[0])
    if any(digest is not None and file_hash(path) == digest for w in sets for path in w.files.values()):
        return None
    return (f"{os.path.basename(weights.split('?', 1)[0])} is taken for {sets[0].name} weights and normalised with "
            f"their mean and std ({sets_hint(name)})")


def note_unnamed_set(name: str, weights: str, overrides: Mapping[str, Any]) -> None:
    """Print `unnamed_set_note`, if any, as one line on stderr (once per model built)."""
    import sys

    note = unnamed_set_note(name, weights, overrides)
    if note:
        print(f"minidino: note: {note}", file=sys.stderr)


def explain_mismatch(error: Exception, name: str) -> Exception:
    """A checkpoint that does not fit a model with several weight sets because of `local_cls_norm` (a satellite
    ViT-L file under another name, or an LVD one named SAT493M): the same error, saying how the set is picked.
    Any other error: itself."""
    from ..weights.load import WeightsMismatchError

    if isinstance(error, WeightsMismatchError) and "local_cls_norm" in str(error) and len(weight_sets(name)) > 1:
        return WeightsMismatchError(f"{error} ({sets_hint(name)})")
    return error
