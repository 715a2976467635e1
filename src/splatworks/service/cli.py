"""``splatworks serve`` (the web service), ``splatworks admin reimport`` and ``splatworks reconstruct``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from splatworks.config import add_arguments, from_args
from splatworks.service.settings import ServiceSettings


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="start the web service and viewer (http://127.0.0.1:8000)",
                       description="Start the reconstruction service: upload page at /, viewer at /v/KEY, API docs "
                                   "at /docs. Data (jobs + database) goes to ./data unless --data-dir says otherwise.")
    add_arguments(p, ServiceSettings)
    p.add_argument("--print-settings", action="store_true", help="print the resolved settings as JSON and exit")
    p.set_defaults(func=_serve)

    a = sub.add_parser("admin", help="maintenance of a service's data folder")
    asub = a.add_subparsers(dest="admin_command", metavar="ACTION")
    r = asub.add_parser("reimport", help="add job folders found in DATA_DIR/jobs (or given folders) to the database")
    r.add_argument("folders", nargs="*", help="folders to import (default: every unknown folder in DATA_DIR/jobs)")
    r.add_argument("--data-dir", default="data", help="the service's data folder (default: data)")
    r.add_argument("--database-url", default="", help="job database URL (default: sqlite in the data folder)")
    r.set_defaults(func=_reimport)
    a.set_defaults(func=lambda args: a.print_help() or 2)

    from splatworks.pipeline.static import register_reconstruct

    register_reconstruct(sub)

    from splatworks.service.worker_cli import register_worker  # `splatworks worker` (README: Running on a cluster)

    register_worker(sub)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from splatworks.service.app import configure_logging, create_app

    settings = from_args(ServiceSettings, args).validate()
    if args.print_settings:
        print(json.dumps(settings.to_dict(), indent=2, sort_keys=True))
        return 0
    configure_logging(settings.log_json, args.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=5)
    return 0


def _reimport(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatworks.service.admin import import_job_dir, reimport_all

    import sys

    from splatworks.errors import UserError

    settings = ServiceSettings(data_dir=Path(args.data_dir), database_url=args.database_url).validate()
    problems: list[tuple[str, str]] = []  # folders that could not be imported (reported, never half-imported)
    if args.folders:
        imported = []
        for f in args.folders:
            try:
                imported.append(import_job_dir(settings, f))
            except UserError as exc:
                problems.append((str(f), str(exc)))
    else:
        imported = reimport_all(settings, problems=problems)
    for job_id, pub_key in imported:
        print(json.dumps({"job_id": job_id, "pub_key": pub_key, "viewer_url": f"/v/{pub_key}"}))
    for name, why in problems:
        print(f"not imported: {name}: {why}", file=sys.stderr)
    if not imported and not problems:
        print("nothing to import: every job folder is already in the database")
    return 1 if problems else 0
