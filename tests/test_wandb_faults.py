"""A W&B server that is up but unusable: it accepts connections and never answers, answers with
an HTTP error, rejects the key, or fails `wandb.init` after answering the probe. Each run warns,
naming the server and the reason (once, even under PYTHONWARNINGS=ignore), logs offline for
`wandb sync`, trains and exits 0, quickly."""

import glob
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import smoke_args

from vit_lightning.run import wandb_logger

VIEWER = json.dumps({"data": {"viewer": {"id": "VXNlcjox", "entity": "someone"}}}).encode()


class _Handler(BaseHTTPRequestHandler):
    status = 500  # every request's answer; the probe's own request may get `probe_status`
    probe_status: int | None = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        is_probe = b"viewer" in body  # the probe, or wandb asking who the key is
        status = self.probe_status if is_probe and self.probe_status else self.status
        payload = VIEWER if status == 200 else b'{"errors": [{"message": "no"}]}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST

    def log_message(self, *args) -> None:
        pass


@contextmanager
def http_server(status: int, probe_status: int | None = None) -> Iterator[int]:
    """An HTTP server on a free local port answering `status` (the probe: `probe_status`)."""
    handler = type("Handler", (_Handler,), {"status": status, "probe_status": probe_status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: the kernel completes the handshake
    for a listening socket, and nothing ever reads the request."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        yield sock.getsockname()[1]


SERVERS = {
    "silent": (silent_server, "does not answer within"),
    "http 500": (lambda: http_server(500), "answers HTTP 500"),
    "http 401": (lambda: http_server(401), "rejects the API key (HTTP 401"),
    "http 403": (lambda: http_server(403), "rejects the API key (HTTP 403"),
}


def _online_env(port: int) -> dict[str, str]:
    return {
        "WANDB_API_KEY": "a" * 40,
        "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
        "WANDB_MODE": "online",
        "PYTHONWARNINGS": "ignore",  # as run_cli sets it: the offline warning must show even so
    }


@pytest.mark.parametrize("kind", SERVERS)
def test_the_probe_names_what_is_wrong_within_its_timeout(kind, monkeypatch):
    make_server, reason = SERVERS[kind]
    with make_server() as port:
        for name, value in _online_env(port).items():
            monkeypatch.setenv(name, value)
        start = time.monotonic()
        problem = wandb_logger.wandb_server_problem(timeout=1.0)
        assert time.monotonic() - start < 2
    assert problem is not None and problem.startswith(reason), problem


def test_the_probe_passes_a_server_that_knows_the_key(monkeypatch):
    with http_server(500, probe_status=200) as port:
        for name, value in _online_env(port).items():
            monkeypatch.setenv(name, value)
        assert wandb_logger.wandb_server_problem(timeout=1.0) is None


def _assert_trained_offline(proc, start, root, port: int, reason: str) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - start < 30  # not wandb.init's 90 s timeout
    assert proc.stderr.count(f"W&B server http://127.0.0.1:{port} {reason}") == 1, proc.stderr
    assert proc.stderr.count(f"wandb sync {root}/wandb/offline-run-*") == 1
    assert "Traceback" not in proc.stderr
    assert len(glob.glob(str(root / "wandb" / "offline-run-*" / "run-*.wandb"))) == 1
    assert (root / "checkpoints" / "last.ckpt").is_file()  # it trained


@pytest.mark.parametrize("kind", ["silent", "http 500", "http 401"])
def test_an_unusable_wandb_server_makes_the_run_log_offline(kind, tmp_path, run_cli):
    make_server, reason = SERVERS[kind]
    online = "--trainer.logger.init_args.offline=false"
    args = smoke_args("fit", tmp_path, "--trainer.max_epochs=1", "--data.train_size=128", online)
    with make_server() as port:
        start = time.monotonic()
        proc = run_cli(*args, env=_online_env(port), timeout=120)  # a hang would hit the timeout
    _assert_trained_offline(proc, start, tmp_path, port, reason)


def test_a_wandb_init_that_fails_after_the_probe_falls_back_to_offline(tmp_path, run_cli):
    # the probe is answered, then every request of wandb.init fails until its timeout
    args = smoke_args(
        "fit",
        tmp_path,
        "--trainer.max_epochs=1",
        "--data.train_size=128",
        "--trainer.logger.class_path=vit_lightning.run.wandb_logger.WandbLogger",
        "--trainer.logger.init_args.offline=false",
    )
    with http_server(500, probe_status=200) as port:
        start = time.monotonic()
        env = {**_online_env(port), "WANDB_INIT_TIMEOUT": "5"}  # wandb's own default: 90 s
        proc = run_cli(*args, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - start < 30
    warning = f"W&B could not start an online run on http://127.0.0.1:{port}"
    assert proc.stderr.count(warning) == 1, proc.stderr[-2000:]
    assert proc.stderr.count(f"wandb sync {tmp_path}/wandb/offline-run-*") == 1
    assert "Traceback" not in proc.stderr
    assert len(glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))) == 1
