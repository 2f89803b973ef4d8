"""Every third-party patch is live in a running server, and a release it was not written for
stops startup with one line (speakflow/_patches/), and nothing is patched before
``install_all`` runs."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
import trio
from hypercorn.protocol import ws_stream
from hypercorn.trio import tcp_server
from wsproto import frame_protocol

from speakflow._deflate import BoundedDeflate
from speakflow._patches import hypercorn_fixes as _hypercorn
from speakflow._patches import versions as _patches
from speakflow._patches import wsmask as _wsmask
from speakflow.hosting import running_app

from ..conftest import make_settings, running_server

PATCHED = [
    (ws_stream.WSStream, "_handle_events"),
    (ws_stream.WSStream, "_accept"),
    (ws_stream.Handshake, "accept"),
    (tcp_server.TCPServer, "protocol_send"),
    (tcp_server.TCPServer, "run"),
]


async def test_every_patch_is_live_in_a_running_server() -> None:
    async with running_server(WS_MAX_MESSAGE_BYTES=300_000) as srv:
        for owner, name in PATCHED:
            assert getattr(getattr(owner, name), _hypercorn.MARK, False), (owner, name)
        assert frame_protocol.XorMaskerSimple is _wsmask.NumpyXorMasker
        with trio.fail_after(10):
            async with srv.client(deflate=True):  # the server's side of it: bounded, configured
                gc.collect()  # earlier servers' connections are gone
                live = [o for o in gc.get_objects() if isinstance(o, BoundedDeflate)]
                assert [o.max_message for o in live if o.enabled()] == [300_000]


@pytest.fixture
def uninstalled(monkeypatch):
    """As before ``install_fixes`` ran (monkeypatch puts the live ones back afterwards)."""

    async def run(self) -> None:  # unmarked: install_fixes checks again
        raise AssertionError("never runs: install_fixes refuses first")

    monkeypatch.setattr(tcp_server.TCPServer, "run", run)
    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", _wsmask.WSPROTO_MASKER)


def fake_versions(monkeypatch, **versions: str) -> None:
    real = _patches.installed_version
    monkeypatch.setattr(
        _patches, "installed_version", lambda package: versions.get(package) or real(package)
    )


async def test_an_unsupported_hypercorn_stops_startup(monkeypatch, uninstalled) -> None:
    fake_versions(monkeypatch, hypercorn="0.19.0")
    with pytest.raises(_patches.PatchError) as refused:
        async with running_app(make_settings()):
            raise AssertionError("the server started")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "hypercorn 0.19.0 is not a version speakflow/_patches/hypercorn_fixes.py"
    )
    assert "uv sync --frozen" in message


async def test_an_unsupported_wsproto_stops_startup(monkeypatch, uninstalled) -> None:
    fake_versions(monkeypatch, wsproto="1.4.0")
    with pytest.raises(_patches.PatchError, match=r"^wsproto 1\.4\.0 is not a version"):
        async with running_app(make_settings()):
            raise AssertionError("the server started")
    with pytest.raises(_patches.PatchError, match=r"speakflow/_patches/wsmask\.py"):
        _wsmask.install()


def test_a_missing_internal_stops_startup(monkeypatch, uninstalled) -> None:
    monkeypatch.delattr(ws_stream.WSStream, "_handle_events")
    with pytest.raises(_patches.PatchError, match=r"has no WSStream\._handle_events"):
        _hypercorn.install_fixes()


def test_an_absent_package_is_named(monkeypatch) -> None:
    monkeypatch.setattr(_patches, "installed_version", lambda package: "")
    with pytest.raises(_patches.PatchError, match=r"^hypercorn \(not installed\)"):
        _patches.require_version("hypercorn", ("0.18.",), _hypercorn.SOURCE)


#: imports the server's modules and builds its configs; nothing may be patched until
#: install_all (in a fresh interpreter: this one has run servers)
NOT_ON_IMPORT = """
import speakflow.app, speakflow.cli, speakflow.startup
from hypercorn.trio import tcp_server
from wsproto import frame_protocol
from speakflow import _patches
from speakflow.hosting import hypercorn_config
from speakflow.startup import load_settings

hypercorn_config(load_settings({"TRANSCRIPT_STORE": "off"}, env_file=None))
masker = frame_protocol.XorMaskerSimple
assert masker.__module__ == "wsproto.frame_protocol", masker
assert not getattr(tcp_server.TCPServer.run, "speakflow_fix", False)
_patches.install_all()
assert frame_protocol.XorMaskerSimple is _patches.wsmask.NumpyXorMasker
assert getattr(tcp_server.TCPServer.run, "speakflow_fix", False)
"""


def test_nothing_is_patched_until_install_all() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NOT_ON_IMPORT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
