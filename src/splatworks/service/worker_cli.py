"""``splatworks worker``: join this GPU machine to a splatworks Ray cluster (a checked ``ray start``).

Before it starts Ray's node process it checks, from this machine, what a job will need here: the job database
answers, the job storage (shared folder or bucket) is writable, and the GPUs it offers exist. A problem is
reported with what to fix, instead of jobs failing later on this node. Then it runs
``ray start --address HEAD --num-gpus N --block`` (``--block``: the node lives as long as this command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from splatworks.errors import UserError


def register_worker(sub: Any) -> None:
    w = sub.add_parser("worker", help="join this (GPU) machine to a splatworks Ray cluster",
                       description="Check the database and job storage from this machine, then start a Ray node "
                                   "that joins the cluster at --address (`ray start --address ... --block`).")
    w.add_argument("--address", required=True, help="the Ray head, HEAD_IP:6379 (printed by `ray start --head`)")
    w.add_argument("--num-gpus", type=int, default=None, help="GPUs this machine offers (default: all it has)")
    w.add_argument("--num-cpus", type=int, default=None, help="CPUs it offers (default: all)")
    w.add_argument("--database-url", required=True, help="the service's postgresql:// job database")
    w.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="the service's data folder as mounted on this machine (same path on every node)")
    w.add_argument("--storage-url", default="", help="job storage, as given to `splatworks serve` (default: "
                                                     "DATA_DIR/jobs on the shared filesystem)")
    w.add_argument("--check-only", action="store_true", help="run the checks and exit without starting Ray")
    w.set_defaults(func=_worker)


def preflight(database_url: str, data_dir: Path, storage_url: str, num_gpus: int | None) -> list[str]:
    """Check what jobs on this node will need; returns lines describing what was checked (raises UserError)."""
    from splatworks.service.storage import open_storage
    from splatworks.service.store import open_store

    lines = []
    store = open_store(database_url)
    lines.append(f"database: ok ({sum(store.counts().values())} jobs)")
    store.close()
    storage = open_storage(storage_url, Path(data_dir) / "jobs")
    storage.check_writable()
    lines.append(f"storage: ok ({storage.url})")
    if num_gpus:
        try:
            import torch

            have = torch.cuda.device_count()
        except ImportError:
            have = 0
        if have < num_gpus:
            raise UserError(f"--num-gpus {num_gpus} but torch sees {have} CUDA GPU(s) on this machine; install the "
                            "CUDA build of torch (make install TORCH_SPEC=... EXTRAS=gpu,cluster) or offer fewer")
        lines.append(f"gpus: {have} visible, offering {num_gpus}")
    return lines


def _worker(args: argparse.Namespace) -> int:
    for line in preflight(args.database_url, args.data_dir, args.storage_url, args.num_gpus):
        print(line)
    if args.check_only:
        return 0
    ray = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if ray is None:
        raise UserError("the `ray` command is missing: pip install 'splatworks[cluster]'")
    cmd = [ray, "start", "--address", args.address, "--block"]
    if args.num_gpus is not None:
        cmd += ["--num-gpus", str(args.num_gpus)]
    if args.num_cpus is not None:
        cmd += ["--num-cpus", str(args.num_cpus)]
    print("starting:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)
