"""Helpers for the service's tests and load benchmark: a real ``splatworks serve`` process on a loopback port.

Not used by the service at run time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m splatworks serve`` in a subprocess (its own process group), JSON logs to ``data_dir/server.log``.

    ``start()`` waits until ``/health`` answers; ``kill(signal.SIGKILL)`` simulates a crash; ``start()`` again
    restarts it on the same port and data folder.
    """

    def __init__(self, data_dir: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.args = Path(data_dir), list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "splatworks", "serve", "--port", str(self.port), "--data-dir",
               str(self.data_dir), *self.args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def multipart_files(paths: list[Path], field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def wait_for(client: httpx.Client, job_id: str, done: Any = None, timeout: float = 300.0,
             poll: float = 0.3) -> dict[str, Any]:
    """Poll a job's status until ``done(status)`` (default: DONE or ERROR); returns the last status."""
    done = done or (lambda s: s["status"] in ("DONE", "ERROR"))
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/recon/jobs/{job_id}/status").json()
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status['status']} after {timeout} s: {status}")
        time.sleep(poll)
