"""Downloads against a local HTTP server on 127.0.0.1: verification, atomicity, retries, the cache.

The served checkpoints are generated with the golden generator and pinned by the test, so
no real network is used and the files are small.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from minidino import create_model, load_weights

from minidino.conformance import golden

from minidino.weights import download as hub


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "LocalServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv = self.server
        srv.requests.append(self.path)
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in srv.cut_next:  # close the connection half-way, once
            srv.cut_next.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.cut_next: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server():
    srv = LocalServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def backbone_bytes(name: str = "dinov2_vits14", depth: int = 1, seed: int = 4) -> tuple[bytes, dict]:
    model = create_model(name, depth=depth, device="meta")
    sd = golden.generate_for(model, seed)
    buf = io.BytesIO()
    torch.save(sd, buf)  # the official files are torch.save'd state dicts
    return buf.getvalue(), sd


def pin_of(path: str, data: bytes) -> hub.Pin:
    return hub.Pin(path=path, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


PATH = "dinov2_vits14/dinov2_vits14_pretrain.pth"


def test_good_download_loads_and_second_call_uses_the_cache(server, tmp_path):
    data, sd = backbone_bytes()
    server.files["/" + PATH] = data
    pin = pin_of(PATH, data)
    path = hub.fetch(pin, cache_dir=tmp_path, base=server.url, progress=False)
    assert path == tmp_path / PATH and path.read_bytes() == data
    model = create_model("dinov2_vits14", depth=1, device="meta")
    load_weights(model, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert server.requests == ["/" + PATH]
    assert hub.fetch(pin, cache_dir=tmp_path, base=server.url, progress=False) == path
    assert server.requests == ["/" + PATH], "a cached file was downloaded again"
    assert files_in(tmp_path) == [PATH, PATH + ".sha256"]


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    data, _ = backbone_bytes()
    server.files["/" + PATH] = data
    wrong = "0" * 64
    with pytest.raises(hub.ChecksumError) as e:
        hub.fetch(hub.Pin(PATH, len(data), wrong), cache_dir=tmp_path, base=server.url, progress=False)
    assert wrong in str(e.value) and hashlib.sha256(data).hexdigest() in str(e.value)
    assert files_in(tmp_path) == []
    with pytest.raises(hub.ChecksumError, match=f"size {len(data)} bytes, expected {len(data) + 1}"):
        hub.fetch(hub.Pin(PATH, len(data) + 1, None), cache_dir=tmp_path, base=server.url, progress=False)
    assert files_in(tmp_path) == []


def test_connection_closed_half_way_leaves_nothing_and_a_retry_succeeds(server, tmp_path):
    data, _ = backbone_bytes()
    server.files["/" + PATH] = data
    server.cut_next.add("/" + PATH)
    pin = pin_of(PATH, data)
    with pytest.raises(hub.DownloadError, match=f"{server.url}/{PATH}"):
        hub.fetch(pin, cache_dir=tmp_path, base=server.url, progress=False, retries=0)
    assert files_in(tmp_path) == []
    assert hub.fetch(pin, cache_dir=tmp_path, base=server.url, progress=False, retries=0).read_bytes() == data
    assert len(server.requests) == 2


def test_automatic_retry_heals_a_dropped_connection(server, tmp_path, monkeypatch):
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)
    data, _ = backbone_bytes()
    server.files["/" + PATH] = data
    server.cut_next.add("/" + PATH)
    assert hub.fetch(pin_of(PATH, data), cache_dir=tmp_path, base=server.url, progress=False, retries=1).read_bytes() == data
    assert len(server.requests) == 2


def test_no_network_error_gives_the_url_and_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(hub.DownloadError) as e:
        hub.fetch(hub.Pin(PATH, 10, None), cache_dir=tmp_path, base=base, progress=False, retries=0)
    msg = str(e.value)
    assert f"{base}/{PATH}" in msg and str(tmp_path / PATH) in msg and "MINIDINO_BASE_URL" in msg
    assert files_in(tmp_path) == []


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(hub.DownloadError, match="HTTP 404"):
        hub.fetch(hub.Pin("missing.pth"), cache_dir=tmp_path, base=server.url, progress=False, retries=0)
    assert files_in(tmp_path) == []


def test_a_wrong_file_put_in_the_cache_by_hand_is_caught(tmp_path):
    data, _ = backbone_bytes()
    (tmp_path / PATH).parent.mkdir(parents=True)
    (tmp_path / PATH).write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])  # one bit flipped
    with pytest.raises(hub.ChecksumError, match="delete it.*SHA-256 mismatch"):
        hub.fetch(pin_of(PATH, data), cache_dir=tmp_path, base="http://127.0.0.1:9", progress=False)


def test_progress_bar_reports_to_the_end(server, tmp_path, capsys):
    data, _ = backbone_bytes()
    server.files["/" + PATH] = data
    hub.fetch(pin_of(PATH, data), cache_dir=tmp_path, base=server.url, progress=True)
    err = capsys.readouterr().err
    assert "dinov2_vits14_pretrain.pth" in err and "100%" in err and err.rstrip().endswith("done")


@pytest.fixture
def pinned_catalogue(server, monkeypatch):
    """The real catalogue with the ViT-S/14 entries replaced by pins of generated files on the local server."""
    data, sd = backbone_bytes("dinov2_vits14", depth=2, seed=9)
    head_sd = {"weight": golden.generate_tensor(9, 1, (1000, 768), 0.0, 0.05), "bias": golden.generate_tensor(9, 2, (1000,), 0.0, 0.1)}
    buf = io.BytesIO()
    torch.save(head_sd, buf)
    head = buf.getvalue()
    server.files["/" + PATH] = data
    server.files["/dinov2_vits14/dinov2_vits14_linear_head.pth"] = head
    pins = hub.load_pins()
    pins["backbones"]["dinov2_vits14"] = {"path": PATH, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # Like most published heads: no digest pinned, only what is known (here: nothing).
    pins["linear_heads"].pop("dinov2_vits14_linear_head")
    monkeypatch.setattr(hub, "load_pins", lambda: pins)
    monkeypatch.setenv("MINIDINO_BASE_URL", server.url)
    return sd, head_sd


def test_create_model_pretrained_true_downloads_verifies_and_loads(pinned_catalogue, server, tmp_path, capsys):
    sd, head_sd = pinned_catalogue
    model = create_model("dinov2_vits14", pretrained=True, depth=2, cache_dir=tmp_path)
    assert model.config.depth == 2  # cache_dir is not taken for a config override
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    lc = create_model("dinov2_vits14_lc", layers=1, pretrained=True, depth=2, cache_dir=tmp_path)
    assert torch.equal(lc.linear_head.weight, head_sd["weight"]) and torch.equal(lc.backbone.norm.bias, sd["norm.bias"])
    assert "no pinned SHA-256" in capsys.readouterr().err
    assert server.requests == ["/" + PATH, "/dinov2_vits14/dinov2_vits14_linear_head.pth"]  # backbone fetched once


def test_minidino_home_is_the_default_cache(pinned_catalogue, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDINO_HOME", str(tmp_path / "home"))
    create_model("dinov2_vits14", pretrained=True, depth=2)
    assert (tmp_path / "home" / PATH).is_file()


def test_create_model_refuses_a_file_that_is_not_the_pinned_one(server, tmp_path, monkeypatch):
    data, _ = backbone_bytes()
    server.files["/" + PATH] = data  # served where the official ViT-S/14 lives, but it is not that file
    monkeypatch.setenv("MINIDINO_BASE_URL", server.url)
    with pytest.raises(hub.ChecksumError) as e:
        create_model("dinov2_vits14", pretrained=True, depth=1, cache_dir=tmp_path)
    assert hub.pin(PATH).sha256 in str(e.value)  # the real pin, untouched
    assert files_in(tmp_path) == []


def test_weights_from_a_url_are_cached(server, tmp_path):
    _, sd = backbone_bytes()
    save_file(sd, str(tmp_path / "w.safetensors"))
    server.files["/mirror/w.safetensors"] = (tmp_path / "w.safetensors").read_bytes()
    url = server.url + "/mirror/w.safetensors"
    for _ in range(2):
        model = create_model("dinov2_vits14", depth=1, pretrained=url, cache_dir=tmp_path / "cache")
        assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert server.requests == ["/mirror/w.safetensors"]


def test_catalogue_paths_follow_the_official_pattern():
    from minidino.weights import weight_files

    assert weight_files("dinov2_vitb14_reg")["backbone"].path == "dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"
    assert weight_files("dinov2_vitl14_reg_lc", layers=4)["linear_head"].path == "dinov2_vitl14/dinov2_vitl14_reg4_linear4_head.pth"
    assert weight_files("dinov2_vits14_lc", layers=1)["linear_head"].sha256 == \
        hub.load_pins()["linear_heads"]["dinov2_vits14_linear_head"]["sha256"]
    assert hub.pin_for("dinov2_vitg14_reg4_pretrain.pth") == weight_files("dinov2_vitg14_reg")["backbone"]
    with pytest.raises(ValueError, match="layers must be 1 or 4"):
        create_model("dinov2_vits14_lc", layers=2, device="meta")
    with pytest.raises(ValueError, match="unknown model name 'dinov2_vits17'"):
        weight_files("dinov2_vits17")


def test_base_url_and_cache_dir_defaults_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIDINO_BASE_URL", raising=False)
    monkeypatch.delenv("MINIDINO_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.base_url() == "https://dl.fbaipublicfiles.com/dinov2"
    assert hub.default_cache_dir() == tmp_path / "xdg" / "minidino"
    monkeypatch.setenv("MINIDINO_BASE_URL", "http://127.0.0.1:8/mirror/")
    monkeypatch.setenv("MINIDINO_HOME", str(tmp_path / "home"))
    assert hub.base_url() == "http://127.0.0.1:8/mirror"
    assert hub.default_cache_dir() == tmp_path / "home"
    assert hub.default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
