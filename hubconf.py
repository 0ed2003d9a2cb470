"""torch.hub entry points with the official names and defaults: one per row of minidino.catalogue.

    model = torch.hub.load("path/to/minidino", "dinov2_vits14", source="local")   # official weights
    model = torch.hub.load("path/to/minidino", "dinov2_vitb14_lc", source="local", layers=1)

As in facebookresearch/dinov2's hubconf: pretrained=True by default (the published checkpoint,
downloaded once and checksum-verified), `weights=` the published set (LVD142M for the backbones,
IMAGENET1K for the `_lc` classifiers, NYU or KITTI for the depthers; an official enum member or
its name), `layers=4` by default where the entry point takes it (`_lc`, `_ld`); the depthers also
take `depth_range=(min, max)`. The DINOv3 backbones take the official DINOv3 hub's keywords:
`weights="LVD1689M"|"SAT493M"|PATH|URL` and `check_hash` (the weights are gated: with
pretrained=True, give the file or signed URL as `weights=`). Other keyword arguments are config overrides of create_model
(e.g. depth=4, device="meta"). Each function is made from its catalogue row, so this file never
lists a name: adding a row adds the entry point.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

dependencies = ["torch"]


def _entry_point(name: str) -> Callable[..., Any]:
    from minidino.catalogue import lookup

    entry = lookup(name)
    P = inspect.Parameter
    params = [P(option, P.KEYWORD_ONLY, default=allowed[0]) for option, allowed in entry.options.items()]
    params.append(P("pretrained", P.KEYWORD_ONLY, default=True))
    if entry.hub_weights:
        params.append(P("weights", P.KEYWORD_ONLY, default=entry.default_weights.name))
    if entry.family == "dinov3":  # the official DINOv3 signature; minidino checks the name's digest unless False
        params.append(P("check_hash", P.KEYWORD_ONLY, default=True))
    params.append(P("kwargs", P.VAR_KEYWORD))

    def load(**kwargs: Any) -> Any:
        import minidino

        bound = inspect.Signature(params).bind(**kwargs)
        bound.apply_defaults()
        args = dict(bound.arguments)
        args.update(args.pop("kwargs"))
        return minidino.create_model(name, **args)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = entry.summary + "."
    load.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return load


def _entry_points() -> dict[str, Callable[..., Any]]:
    from minidino.catalogue import CATALOGUE

    return {name: _entry_point(name) for name in CATALOGUE}


globals().update(_entry_points())
