"""dino.txt: structure, live parity with the official model, tokenizer, weights, bad input.

Live tests build the official model from the hub snapshot's own classes (its entry point always
downloads the published weights) at reduced size: backbone 2 blocks, text transformer 2 layers
of width 128; the vision head as published. Same random weights in both, max abs must be 0.0.
The tokenizer is checked on CLIP's real vocabulary, found inside the `clip-anytorch` wheel
(`pip install --no-deps clip-anytorch==2.6.0`, a test dependency); without it those tests skip.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

import minidino
from minidino.weights import download as hub
from minidino.heads.dinotxt import DinoTxt, patch_text_similarity
from minidino.conformance.compare import max_abs_difference
from minidino.conformance.reference import ReferenceUnavailable, official_dinotxt, official_repo, official_tokenizer
from minidino.heads.tokenizer import Tokenizer
from minidino.weights import weight_files
from minidino.weights.vocab import tokenize, vocab_path, vocab_pin

VOCAB_PIN = vocab_pin()
from minidino.weights import WeightsMismatchError

from test_download import server  # noqa: F401  (the local http server fixture)

NAME = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"
SMALL = dict(depth=2, text_width=128, text_num_heads=2, text_layers=2)
REPO = official_repo()
needs_repo = pytest.mark.skipif(not REPO, reason="no official hub code (../shared/official/dinov2-*.tar.gz, $MINIDINO_OFFICIAL_REPO)")


def _clip_vocab() -> Path | None:
    spec = importlib.util.find_spec("clip")  # located, not imported (the clip package imports torchvision)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


VOCAB = _clip_vocab()
needs_vocab = pytest.mark.skipif(VOCAB is None, reason="CLIP's vocabulary not found: pip install --no-deps clip-anytorch==2.6.0")
needs_text_extra = pytest.mark.skipif(importlib.util.find_spec("ftfy") is None or importlib.util.find_spec("regex") is None,
                                      reason="pip install ftfy regex (the optional extra minidino[text])")

TRICKY = [
    "a photo of a cat", "Café crème brûlée à la mode", "naïve façade — “quoted” ‘text’",
    "🐱🐶 emoji 👍🏽 family 👨‍👩‍👧", "Tom &amp; Jerry &lt;b&gt; &amp;amp; &#39;x&#39; &nbsp;",
    "   lots   of \t\n whitespace\u3000here  ", "ＦＵＬＬＷＩＤＴＨ ﬁnance", "", "x " * 200,
    "日本語のテキスト 中文 한국어", "numbers 12345 3.14 1,000,000", "don't it's we're I'll you've I'm he'd DON'T",
    "Ã©mojibake cafÃ©", "URL https://example.com/a?b=c&d=e#f", "e\u0301 combining", "tab\tsep\x00ctrl\x1b[31mred", "a" * 300,
]


@functools.lru_cache(maxsize=1)
def live_pair() -> tuple[torch.nn.Module, DinoTxt]:
    """(official, ours) at reduced size with the same random weights (every parameter exercised)."""
    official = official_dinotxt(REPO, depth=SMALL["depth"], text_width=SMALL["text_width"],
                                text_num_heads=SMALL["text_num_heads"], text_layers=SMALL["text_layers"])
    ours = minidino.create_model(NAME, **SMALL)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in official.state_dict().items():
        scale = 0.02 if v.ndim >= 2 and "token" not in k and "embed" not in k else 0.5
        offset = 1.0 if k.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight", "ln_final.weight")) else 0.0
        sd[k] = torch.randn(v.shape, generator=g) * scale + offset
    sd["logit_scale"] = torch.tensor([2.659260036932778])  # the published value (exp = 1 / 0.07)
    official.load_state_dict(sd, strict=True)
    ours.load_state_dict(official.state_dict(), strict=True)  # the official keys, as they are
    return official, ours


def random_ids(B: int, L: int, eot_at: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 49406, (B, L), generator=g)
    for b, n in enumerate(eot_at):
        ids[b, 0], ids[b, n] = 49406, 49407
        ids[b, n + 1 :] = 0
    return ids


# ------------------------------------------------------------------ structure
def test_names_alias_and_full_size_structure_on_meta():
    assert NAME in minidino.list_models() and NAME not in minidino.list_models(include_classifiers=False)
    model = minidino.create_model("dinotxt", device="meta")  # the short alias
    assert isinstance(model, DinoTxt) and not model.training
    sd = model.state_dict()
    # Measured on the official entry point's model (downloads replaced): 646 tensors, 867,830,273 values.
    assert len(sd) == 646 and sum(v.numel() for v in sd.values()) == 867_830_273
    assert sd["text_model.backbone.token_embedding.weight"].shape == (49408, 1280)
    assert sd["visual_model.head.block_list.1.mlp.w1.weight"].shape == (2752, 1024)
    assert sd["text_model.head.linear_projection.weight"].shape == (2048, 1280)
    assert sum(k.startswith("visual_model.backbone.model.") for k in sd) == 344  # the ViT-L/14 reg4 file's keys
    with pytest.raises(TypeError, match="text_layerz"):
        minidino.create_model("dinotxt", text_layerz=2, device="meta")
    with pytest.raises(ValueError, match="twice the backbone width"):
        minidino.create_model("dinotxt", embed_dim=1000, device="meta")


def test_random_init_is_usable_and_logit_scale_is_the_published_one():
    model = minidino.create_model("dinotxt", **SMALL)
    assert model.logit_scale.item() == pytest.approx(2.659260036932778)
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 28, 42), normalize=True)
        txt = model.encode_text(random_ids(3, 77, [3, 10, 76]), normalize=True)
    assert img.shape == (2, 2048) and txt.shape == (3, 2048)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))


# ------------------------------------------------------------------ live parity
@needs_repo
def test_live_parity_with_the_official_model():
    official, ours = live_pair()
    x = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    x2 = torch.randn(1, 3, 98, 70, generator=torch.Generator().manual_seed(2))
    ids = random_ids(3, 77, [5, 40, 76], seed=3)
    figures = {}
    with torch.no_grad():
        for norm in (False, True):
            figures[f"encode_image(normalize={norm})"] = max_abs_difference(official.encode_image(x, normalize=norm),
                                                                            ours.encode_image(x, normalize=norm))
            figures[f"encode_text(normalize={norm})"] = max_abs_difference(official.encode_text(ids, normalize=norm),
                                                                           ours.encode_text(ids, normalize=norm))
        figures["image embeddings 98x70"] = max_abs_difference(official.encode_image(x2), ours.encode_image(x2))
        figures["text embeddings, context 41"] = max_abs_difference(official.encode_text(ids[:2, :41]),
                                                                    ours.encode_text(ids[:2, :41]))
        figures["class and patch tokens"] = max_abs_difference(official.get_visual_class_and_patch_tokens(x),
                                                               ours.get_visual_class_and_patch_tokens(x))
        figures["get_logits"] = max_abs_difference(official.get_logits(x, ids), ours.get_logits(x, ids))
        figures["forward"] = max_abs_difference(official(x, ids), ours(x, ids))
        logits = ours.get_logits(x, ids)[0]
    for what, d in figures.items():
        print(f"dino.txt vs official: {what:32s} max abs {d:.3e}")
    assert logits.std() > 0.05, "weights must exercise the model (logits not constant)"
    assert all(d == 0.0 for d in figures.values()), figures


@needs_repo
def test_official_head_and_text_encoder_files_load_as_they_are(tmp_path, monkeypatch):
    official, _ = live_pair()
    files = {"backbone": tmp_path / "backbone.pth", "vision_head": tmp_path / "head.pth", "text_encoder": tmp_path / "text.pth"}
    torch.save(official.visual_model.backbone.model.state_dict(), files["backbone"])  # the three published files' layouts
    torch.save(official.visual_model.head.state_dict(), files["vision_head"])
    torch.save(official.text_model.state_dict(), files["text_encoder"])
    model = minidino.create_model(NAME, pretrained=files, **SMALL)
    x, ids = torch.randn(1, 3, 42, 42), random_ids(2, 77, [4, 20])
    with torch.no_grad():
        d = max_abs_difference(official.get_logits(x, ids), model.get_logits(x, ids))
    print(f"dino.txt from the three official files: logits max abs {d:.3e}")
    assert d == 0.0
    # pretrained=True asks the cache for exactly those three files
    asked = []
    monkeypatch.setattr(hub, "fetch", lambda pin, **kw: asked.append(pin.path) or files[
        {p.path: part for part, p in weight_files(NAME).items()}[pin.path]])
    minidino.create_model(NAME, pretrained=True, **SMALL)
    assert asked == ["dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth",
                     "dinov2_vitl14/dinov2_vitl14_reg4_dinotxt_tet1280d20h24l_vision_head.pth",
                     "dinov2_vitl14/dinov2_vitl14_reg4_dinotxt_tet1280d20h24l_text_encoder.pth"]
    # a head file that does not fit is refused with the differences named
    with pytest.raises(WeightsMismatchError, match="missing .*block_list.1"):
        minidino.create_model(NAME, pretrained={"vision_head": {k: v for k, v in torch.load(files["vision_head"]).items()
                                                                 if "block_list.1" not in k}}, **SMALL)


def test_whole_model_state_dict_round_trip(tmp_path):
    a = minidino.create_model(NAME, **SMALL)
    path = tmp_path / "dinotxt.safetensors"
    minidino.save_weights(a.state_dict(), path)
    b = minidino.create_model(NAME, pretrained=str(path), **SMALL)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    c = minidino.create_model(NAME, **SMALL)
    report = minidino.load_weights(c, {"text_encoder": {k.removeprefix("text_model."): v for k, v in a.state_dict().items()
                                                        if k.startswith("text_model.")}})
    assert report.loaded == ["text_encoder"] and torch.equal(c.text_model.head.linear_projection.weight,
                                                              a.text_model.head.linear_projection.weight)


# ------------------------------------------------------------------ the maths, checked on ours
def test_causal_mask_and_end_of_text_pooling():
    model = minidino.create_model(NAME, **SMALL)
    ids = random_ids(2, 77, [10, 30])
    other = ids.clone()
    other[:, 50:] = torch.randint(1, 49406, (2, 27))  # anything after <end of text> (padding) changes nothing
    tokens_before = ids.clone()
    tokens_before[0, 3] = 1234  # a token before it does
    with torch.no_grad():
        e, e2, e3 = model.encode_text(ids), model.encode_text(other), model.encode_text(tokens_before)
        text = model.text_model.backbone
        text.attn_impl = "explicit"  # the readable softmax path agrees with SDPA
        d = float((model.encode_text(ids) - e).abs().max())
    print(f"text attention explicit vs fused: max abs {d:.3e}")
    assert torch.equal(e, e2) and not torch.allclose(e[0], e3[0]) and torch.equal(e[1], e3[1]) and d < 1e-5


def test_patch_text_similarity_shapes_and_values():
    p, t = torch.randn(2, 12, 8), torch.randn(3, 16)
    s = patch_text_similarity(p, t)
    assert s.shape == (2, 3, 12)
    want = torch.nn.functional.cosine_similarity(p[1, 5], t[2, 8:], dim=0)
    assert torch.allclose(s[1, 2, 5], want, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        patch_text_similarity(p, torch.randn(3, 10))


# ------------------------------------------------------------------ tokenizer
@needs_vocab
@needs_text_extra
def test_tokenizer_known_ids_and_overlong_text():
    tok = Tokenizer(VOCAB)
    assert tok.vocab_size == 49408
    ids = tok.tokenize(["a photo of a cat", "x " * 200])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0] and ids.dtype == torch.int64
    assert ids[1, -1] == 49407 and (ids[1] != 0).all()  # cut to 77, still ending in <end of text>
    assert tok.decode(tok.encode("Café crème")).strip() == "café crème"


@needs_repo
@needs_vocab
@needs_text_extra
def test_tokenizer_equals_the_official_one_id_for_id():
    try:
        official = official_tokenizer(VOCAB, REPO)
    except ReferenceUnavailable as e:
        pytest.skip(str(e))
    ours = Tokenizer(VOCAB)
    for text in TRICKY:
        assert torch.equal(official.tokenize(text), ours.tokenize(text)), text
    for L in (77, 16, 5):
        assert torch.equal(official.tokenize(TRICKY, context_length=L), ours.tokenize(TRICKY, context_length=L)), L
    print(f"tokenizer: {len(TRICKY)} tricky texts at context 77, 16, 5: identical ids")


@needs_vocab
@needs_text_extra
def test_vocab_is_downloaded_once_cached_and_checked(server, tmp_path, monkeypatch):  # noqa: F811
    from minidino.weights import vocab

    monkeypatch.setattr(vocab, "_SHIPPED_BY", ())  # no installed CLIP copy: the download path
    data = VOCAB.read_bytes()
    server.files["/" + VOCAB_PIN.path] = data
    path = vocab_path(cache_dir=tmp_path, base=server.url, progress=False)
    assert path.read_bytes() == data and server.requests == ["/" + VOCAB_PIN.path]
    assert tokenize("a dog", cache_dir=tmp_path)[0, :4].tolist() == [49406, 320, 1929, 49407]
    assert vocab_path(cache_dir=tmp_path, base=server.url, progress=False) == path and len(server.requests) == 1
    server.files["/" + VOCAB_PIN.path] = data[:-10] + b"0123456789"  # a different file of the same size
    with pytest.raises(hub.ChecksumError):
        vocab_path(cache_dir=tmp_path / "other", base=server.url, progress=False)


# ------------------------------------------------------------------ bad input
@needs_vocab
@needs_text_extra
def test_tokenizer_bad_input():
    tok = Tokenizer(VOCAB)
    with pytest.raises(TypeError, match="string"):
        tok.tokenize(123)
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        tok.tokenize(["a", 3])
    with pytest.raises(ValueError, match="empty"):
        tok.tokenize([])
    with pytest.raises(ValueError, match="context_length"):
        tok.tokenize("a", context_length=1)


def test_bad_token_ids_and_images():
    model = minidino.create_model(NAME, **SMALL)
    with pytest.raises(TypeError, match="tokenize"):
        model.encode_text(["a cat"])
    with pytest.raises(TypeError, match="integer"):
        model.encode_text(torch.zeros(1, 77))
    with pytest.raises(ValueError, match=r"\[0, 49408\)"):
        model.encode_text(torch.full((1, 77), 49408))
    with pytest.raises(ValueError, match=r"\[0, 49408\)"):
        model.encode_text(torch.full((1, 77), -1))
    with pytest.raises(ValueError, match="at most 77"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match="no <end of text>"):
        model.encode_text(random_ids(2, 77, [5, 9])[:, :7])  # the second text lost its end
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model.encode_text(torch.zeros(77, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        model.encode_image(torch.randn(1, 3, 30, 28))
    with pytest.raises((ValueError, TypeError), match="channel|3"):
        model.encode_image(torch.randn(1, 4, 28, 28))
