"""Install the viewer's third-party ES modules (Spark, three.js) from npm and copy them into ``static/vendor/``.

Run by ``make install`` as ``python -m splatworks.viewer.build``. Nothing third-party is committed: npm fetches
the packages pinned in ``package.json``/``package-lock.json`` into ``node_modules/`` (git-ignored), and this
script copies only what the page loads at run time into ``static/vendor/`` (git-ignored), which the service
serves under ``/static/vendor/``. The page's import map (``static/viewer.html``) points at these files:

    three             -> /static/vendor/three/three.module.min.js   (+ three.core.min.js, which it imports)
    three/addons/     -> /static/vendor/three/addons/            (only the addons we import, plus their imports)
    @sparkjsdev/spark -> /static/vendor/spark/spark.module.js    (worker and wasm are inlined in this build)

Idempotent: when ``node_modules`` is newer than the lock file and every vendored file matches its source (size
and mtime), it returns in milliseconds without running npm.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import UserError

VIEWER_DIR = Path(__file__).resolve().parent
STATIC_DIR = VIEWER_DIR / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
NODE_MODULES = VIEWER_DIR / "node_modules"

# Addons (paths under three/examples/jsm/) that our code or Spark import; their relative imports follow.
THREE_ADDONS = ("controls/OrbitControls.js", "postprocessing/Pass.js")
# Files of each package copied verbatim: (package-relative source, vendor-relative destination).
PACKAGE_FILES = {
    # The minified builds halve what a browser downloads; three.module.min.js imports ./three.core.min.js.
    "three": [("build/three.module.min.js", "three/three.module.min.js"),
              ("build/three.core.min.js", "three/three.core.min.js"), ("LICENSE", "three/LICENSE")],
    "@sparkjsdev/spark": [("dist/spark.module.js", "spark/spark.module.js"), ("LICENSE", "spark/LICENSE")],
}
# Spark loads fflate through an inlined copy; no other bare imports are expected besides these.
KNOWN_BARE_IMPORTS = ("three", "three/addons/")
_IMPORT_RE = re.compile(r"""(?:import|export)\s[^'";]*?from\s*['"]([^'"]+)['"]|import\s*['"]([^'"]+)['"]""")


def _imports(js_file: Path) -> list[str]:
    """Module specifiers that ``js_file`` imports statically (``from '...'`` and bare ``import '...'``)."""
    text = js_file.read_text(encoding="utf-8")
    return [a or b for a, b in _IMPORT_RE.findall(text)]


def _addon_closure(addons_root: Path, entries: tuple[str, ...]) -> list[str]:
    """Addon paths (relative to ``examples/jsm``) of ``entries`` plus every addon they import relatively."""
    todo, seen = list(entries), set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        src = addons_root / rel
        if not src.is_file():
            raise UserError(f"three.js addon {rel} not found in {addons_root}; run `make viewer` again "
                            "(node_modules may be incomplete) or check the three version in package.json")
        seen.add(rel)
        for spec in _imports(src):
            if spec.startswith("."):
                todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(rel), spec)))
            elif spec != "three" and not spec.startswith("three/addons/"):
                raise UserError(f"three.js addon {rel} imports {spec!r}, which the import map does not provide")
    return sorted(seen)


def vendor_plan(node_modules: Path = NODE_MODULES) -> list[tuple[Path, Path]]:
    """(source, destination) pairs that make up ``static/vendor/``."""
    plan = []
    for package, files in PACKAGE_FILES.items():
        for src, dst in files:
            plan.append((node_modules / package / src, VENDOR_DIR / dst))
    addons_root = node_modules / "three" / "examples" / "jsm"
    for rel in _addon_closure(addons_root, THREE_ADDONS):
        plan.append((addons_root / rel, VENDOR_DIR / "three" / "addons" / rel))
    return plan


def _npm_install(npm: str) -> None:
    has_lock = (VIEWER_DIR / "package-lock.json").is_file()
    cmd = [npm, "ci" if has_lock else "install", "--no-audit", "--no-fund", "--loglevel=error"]
    print(f"viewer: {' '.join(cmd[:2])} in {VIEWER_DIR}", file=sys.stderr)
    proc = subprocess.run(cmd, cwd=VIEWER_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed in {VIEWER_DIR} (exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
                        "Check that the npm registry is reachable, then run `make viewer` again.")


def _node_modules_current() -> bool:
    """True when node_modules was installed after the last change of package.json / the lock file."""
    marker = NODE_MODULES / ".package-lock.json"  # npm writes this on every install
    if not marker.is_file():
        return False
    stamp = marker.stat().st_mtime
    sources = [VIEWER_DIR / "package.json", VIEWER_DIR / "package-lock.json"]
    if any(p.is_file() and p.stat().st_mtime > stamp for p in sources):
        return False
    wanted = json.loads((VIEWER_DIR / "package.json").read_text())
    return all((NODE_MODULES / name / "package.json").is_file()
               for section in ("dependencies", "devDependencies") for name in wanted.get(section, {}))


def _same(src: Path, dst: Path) -> bool:
    if not dst.is_file():
        return False
    a, b = src.stat(), dst.stat()
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def build(force: bool = False) -> dict[str, int]:
    """Make ``static/vendor/`` current; returns counts ``{"npm": 0|1, "copied": n, "kept": m}``.

    Raises:
        UserError: npm is missing, npm failed, or an expected file is absent from the npm packages.
    """
    ran_npm = 0
    if force or not _node_modules_current():
        npm = shutil.which("npm")
        if npm is None:
            raise UserError("npm not found: the viewer needs Node.js >= 18 and npm to fetch Spark and three.js. "
                            "Install them (Debian: `apt-get install nodejs npm`), then run `make viewer`.")
        _npm_install(npm)
        ran_npm = 1
    copied = kept = 0
    planned = vendor_plan()
    for src, dst in planned:
        if not src.is_file():
            raise UserError(f"{src} is missing after npm install; delete {NODE_MODULES} and run `make viewer`")
        if not force and _same(src, dst):
            kept += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copy2(src, tmp)
        tmp.replace(dst)  # atomic: a server reading the file never sees half of it
        copied += 1
    # Drop stale files from earlier plans (e.g. an addon no longer used).
    keep = {dst for _, dst in planned}
    for path in VENDOR_DIR.rglob("*"):
        if path.is_file() and path not in keep:
            path.unlink()
    return {"npm": ran_npm, "copied": copied, "kept": kept}


def is_built() -> bool:
    """True when every file the page imports is present in ``static/vendor/``."""
    try:
        return all(dst.is_file() for _, dst in vendor_plan())
    except UserError:
        return all((VENDOR_DIR / dst).is_file() for files in PACKAGE_FILES.values() for _, dst in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splatworks.viewer.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="run npm and copy every file even when up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = build(force=args.force)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"viewer: vendor/ ready ({counts['copied']} copied, {counts['kept']} up to date"
          f"{', npm ran' if counts['npm'] else ''}) in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
