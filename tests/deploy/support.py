"""Real processes for the deployment tests: `speakflow serve --config` and nginx."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from ..conftest import REPO

DEPLOY = REPO / "deploy"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A `speakflow serve` process; ``log`` holds its JSON log lines."""

    def __init__(self, port: int, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.log = log
        self.proc = proc
        self.http = f"http://127.0.0.1:{port}"

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    out.append(entry)
        return out


@contextmanager
def speakflow_serve(
    tmp: Path, args: list[str], env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[Server]:
    """Run ``python -m speakflow serve ARGS --port PORT``; wait until /v1/health answers."""
    port = free_port() if port is None else port
    log = tmp / f"speakflow-{port}.log"
    environ = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    environ.update({"LOG_FORMAT": "json", **(env or {})})
    cmd = [sys.executable, "-m", "speakflow", "serve", *args, "--port", str(port)]
    cmd += ["--env-file", str(tmp / "no.env")]  # a developer's .env must not leak in
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log, timeout=60)  # Hypercorn binds after startup (model load)
        health = httpx.get(f"http://127.0.0.1:{port}/v1/health")
        assert health.status_code == 200 and health.json()["provider_ready"], log.read_text()
        yield Server(port, log, proc)
    finally:
        stop(proc)


def _settings_names() -> frozenset[str]:
    from speakflow.config import Settings

    return frozenset(Settings.__struct_fields__)


_SETTINGS = _settings_names()


@contextmanager
def nginx(tmp: Path, http_block: str) -> Iterator[int]:
    """A real nginx on 127.0.0.1:<free port>, in the foreground, everything under ``tmp``.

    ``http_block`` is the inside of ``http { }``; ``{port}`` in it is nginx's port.
    """
    assert NGINX is not None
    port = free_port()
    root = tmp / "nginx"
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / d).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{http_block.replace("{port}", str(port))}
}}
"""
    )
    log = root / "stderr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [NGINX, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, root / "error.log", timeout=10)
        yield port
    finally:
        stop(proc)


def shipped_locations(read_timeout: str) -> str:
    """The location blocks of deploy/nginx.conf, with proxy_read_timeout replaced."""
    text = (DEPLOY / "nginx.conf").read_text()
    start = text.index("# >>> locations")
    end = text.index("# <<< locations")
    part = text[start:end]
    assert part.count("proxy_read_timeout 60s;") == 1, part
    return part.replace("proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};")


def make_self_signed(tmp: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for localhost (PEM files under ``tmp``)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def eventually(predicate: Callable[[], object]) -> None:
    """Poll ``predicate`` (a file another process writes) until it is true; bound it
    with ``trio.fail_after`` around the call."""
    while True:
        if predicate():
            return
        await trio.sleep(0.05)
