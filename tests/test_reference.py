"""minidino.conformance.reference: how the official code is found, and the clear errors when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minidino.conformance import reference
from minidino.conformance.compare import max_abs_difference
from minidino.conformance.reference import ReferenceUnavailable, official_model


@pytest.mark.parametrize("name", ["dinov2_vits14_reg", "dinov2_vitg14_reg", "dinov2_vits14_lc"])
def test_snapshot_refuses_what_it_does_not_have(name):
    with pytest.raises(ReferenceUnavailable, match="no register tokens or linear heads"):
        official_model(name, pypi=True)


def test_missing_snapshot_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(reference, "snapshot_available", lambda: False)
    monkeypatch.setattr(reference, "official_repo", lambda repo=None: None)
    with pytest.raises(ReferenceUnavailable, match=r"pip install --no-deps dinov2==0\.0\.1\.dev2"):
        official_model("dinov2_vits14")


def test_hub_code_takes_only_depth(tmp_path):
    (tmp_path / "hubconf.py").write_text("")
    with pytest.raises(TypeError, match=r"the hub code takes only depth="):
        official_model("dinov2_vits14", repo=tmp_path, num_heads=2)


def test_a_repo_that_is_not_the_hub_code_is_named(tmp_path):
    with pytest.raises(ReferenceUnavailable, match="no hubconf.py"):
        official_model("dinov2_vits14", repo=tmp_path)
    with pytest.raises(ReferenceUnavailable, match="expected a folder of the official hub code or a .tar.gz"):
        official_model("dinov2_vits14", repo=tmp_path / "missing")


def test_tarball_is_unpacked_once_and_found(tmp_path, monkeypatch):
    import tarfile

    src = tmp_path / "src" / "dinov2-test"
    src.mkdir(parents=True)
    (src / "hubconf.py").write_text("dependencies = []\n")
    tgz = tmp_path / "snap.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname="dinov2-test")
    monkeypatch.setattr(reference.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = reference.official_repo(tgz)
    assert first.endswith("dinov2-test") and (Path(first) / "hubconf.py").is_file()
    assert reference.official_repo(tgz) == first  # the same unpacked copy, not a second one
    assert len(list((tmp_path / "tmp").iterdir())) == 1


def test_unknown_override_is_named():
    with pytest.raises(TypeError, match="unknown config field 'dpeth'"):
        official_model("dinov2_vits14", pypi=True, dpeth=2)


def test_max_abs_difference_walks_nested_outputs():
    a = {"x": torch.zeros(2, 3), "m": torch.tensor([True, False]), "none": None,
         "layers": (torch.zeros(1), (torch.ones(2), torch.zeros(0)))}
    b = {"x": torch.zeros(2, 3), "m": torch.tensor([True, True]), "none": None,
         "layers": (torch.zeros(1), (torch.full((2,), 1.5), torch.zeros(0)))}
    assert max_abs_difference(a, a) == 0.0
    assert max_abs_difference(a, b) == 1.0  # max(0, one differing mask entry, |1 - 1.5|)
    b["m"] = a["m"].clone()
    assert max_abs_difference(a, b) == 0.5


@pytest.mark.skipif(not reference.snapshot_available(), reason="pip install --no-deps dinov2==0.0.1.dev2")
def test_snapshot_model_has_our_keys_and_shapes():
    import minidino

    ref = official_model("dinov2_vitg14", pypi=True, depth=1)
    assert ref.attn_impl == "explicit" and "April-2023" in ref.source
    ours = minidino.create_model("dinov2_vitg14", depth=1, device="meta")
    assert {k: tuple(v.shape) for k, v in ref.module.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_selftest_live_section_fails_on_any_difference(monkeypatch, capsys):
    import argparse

    from minidino.cli import selftest
    from minidino.conformance import side_by_side

    args = argparse.Namespace(official=None)
    monkeypatch.setattr(reference, "official_repo", lambda repo=None: None)
    monkeypatch.setattr(reference, "snapshot_available", lambda: False)
    assert selftest.live(args) == 0
    assert "skipped" in capsys.readouterr().out
    monkeypatch.setattr(reference, "snapshot_available", lambda: True)
    monkeypatch.setattr(side_by_side, "side_by_side", lambda name, repo=None, **kw: [("1x3x14x14", 0.0), ("2x3x28x28", 2e-7)])
    assert selftest.live(args) == 4  # four models, each with one input off by 2e-7
    out = capsys.readouterr().out
    assert "FAIL" in out and "2.000e-07" in out
    monkeypatch.setattr(side_by_side, "side_by_side", lambda name, repo=None, **kw: [("1x3x14x14", 0.0)])
    assert selftest.live(args) == 0


def test_checkout_path_goes_through_torch_hub_with_layers():
    """The plumbing of repo=: torch.hub.load(source="local") of a hubconf.py. Our own hubconf
    stands in for the official checkout here (same entry-point names and arguments)."""
    import minidino

    root = Path(__file__).resolve().parents[1]
    ref = official_model("dinov2_vits14_lc", repo=str(root), layers=1)
    assert ref.attn_impl == "fused" and "torch.hub" in ref.source
    assert isinstance(ref.module, minidino.LinearClassifier) and ref.module.layers == 1
