"""Throwaway cluster parts for tests and benchmarks: PostgreSQL, an S3-compatible server, a multi-node Ray cluster.

Not used by the service at run time. Each part is a real server process on loopback in a temp folder, torn down
by ``stop()``; ``available()`` says why one cannot run on this machine (tests skip with that reason).

- :class:`PostgresServer`: Debian's ``initdb`` / ``pg_ctl`` (``apt-get install postgresql``), run as the
  ``postgres`` user when we are root (PostgreSQL refuses to run as root), trust auth on 127.0.0.1.
- :class:`S3Server`: moto's server mode (``moto_server``), an S3-compatible HTTP endpoint in memory.
- :func:`ray_cluster`: ``ray.cluster_utils.Cluster`` (all nodes on this machine) with a head that offers no
  CPUs to jobs and worker nodes that each declare one GPU (a declared resource: jobs run on CPU). The nodes use
  this machine's own address (Ray rewrites 127.0.0.1 in a driver's address to it); nothing leaves the machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from splatworks.service.testing import free_port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


class PostgresServer:
    """A fresh PostgreSQL cluster on 127.0.0.1:PORT in a temp folder; ``url`` is ready after ``start()``."""

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="splatworks-pg-", dir=base))
        self.data = self.base / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0

    @staticmethod
    def available() -> str | None:
        """None if a server can start here, else the reason."""
        if _pg_bin() is None:
            return "PostgreSQL is not installed (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "no 'postgres' user to run PostgreSQL as (apt-get install postgresql creates it)"
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg is not installed (pip install 'splatworks[cluster]')"
        return None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        bin_dir = _pg_bin()
        assert bin_dir is not None, self.available()
        if self._as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        subprocess.run(self._cmd(str(bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                 "--no-sync", "-E", "UTF8"), check=True, capture_output=True)
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=300 -c shared_buffers=32MB")
        subprocess.run(self._cmd(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                                 str(self.base / "server.log"), "-w", "-t", str(int(timeout)), "start"),
                       check=True, capture_output=True)
        return self

    def stop(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is not None and self.data.exists():
            subprocess.run(self._cmd(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                           capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def new_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL (each test gets a clean database on the one server)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


# Credentials the test server accepts (any will do); clients and Ray worker processes need them in their env.
S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's S3-compatible server on 127.0.0.1:PORT (in memory: proves the plumbing, not durability)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(S3_TEST_ENV)

    @staticmethod
    def available() -> str | None:
        try:
            import moto.server  # noqa: F401
            import s3fs  # noqa: F401
        except ImportError:
            return "moto[server] and s3fs are not installed (pip install 'splatworks[cluster]')"
        return None

    def start(self, timeout: float = 60.0) -> "S3Server":
        import urllib.request

        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2)
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto server exited with {self.proc.returncode}")
                time.sleep(0.2)
        raise RuntimeError(f"moto server did not answer within {timeout} s")

    def make_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_aws_kwargs(self.env)).create_bucket(Bucket=name)
        return f"s3://{name}/jobs?endpoint_url={self.endpoint}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _aws_kwargs(env: dict[str, str]) -> dict[str, Any]:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def ray_available() -> str | None:
    try:
        import ray.cluster_utils  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install 'splatworks[cluster]')"
    return None


def ray_cluster(workers: int = 2, gpus_per_worker: int = 1, cpus_per_worker: int = 1) -> Any:
    """A real multi-node Ray cluster in this process tree, all on this machine.

    Returns ``(cluster, worker_nodes)``: the head offers no CPUs (the API connects to it, jobs never run there);
    each worker node declares ``gpus_per_worker`` GPUs. Stop with ``cluster.shutdown()``.
    """
    from ray.cluster_utils import Cluster

    # Nodes use this machine's own address: Ray rewrites 127.0.0.1 in a driver's address to the node IP, so a
    # loopback-only cluster could not be joined by the API process. Nothing leaves this machine either way.
    common = {"object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False, **common})
    nodes = [cluster.add_node(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, **common) for _ in range(workers)]
    cluster.wait_for_nodes()
    return cluster, nodes


__all__ = ["PostgresServer", "S3Server", "S3_TEST_ENV", "ray_cluster", "ray_available"]
