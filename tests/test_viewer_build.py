"""The viewer's npm build step: vendor/ holds exactly what the import map needs, is idempotent, and fails clearly."""

from __future__ import annotations

import re

import pytest

from splatworks.errors import UserError
from splatworks.viewer import STATIC_DIR, VENDOR_DIR, build

needs_bundle = pytest.mark.skipif(not (build.NODE_MODULES / "three").is_dir(), reason="run `make viewer` first")


@needs_bundle
def test_build_is_idempotent_and_complete() -> None:
    build.build()
    again = build.build()
    assert again == {"npm": 0, "copied": 0, "kept": len(build.vendor_plan())}
    # Every module the page imports resolves to a vendored file, and every relative import inside them too.
    html = (STATIC_DIR / "viewer.html").read_text()
    imports = dict(re.findall(r'"([^"]+)":\s*"(/static/vendor/[^"]+)"', html))
    assert set(imports) == {"three", "three/addons/", "@sparkjsdev/spark"}
    for spec, url in imports.items():
        target = STATIC_DIR / url.removeprefix("/static/")
        assert target.exists(), f"import map entry {spec} -> {url} is missing"
    js = (STATIC_DIR / "viewer.js").read_text()
    for addon in re.findall(r'from "three/addons/([^"]+)"', js):
        assert (VENDOR_DIR / "three" / "addons" / addon).is_file()
    for module in VENDOR_DIR.rglob("*.js"):
        for spec in build._imports(module):
            if spec.startswith("."):
                assert (module.parent / spec).resolve().is_file(), f"{module} imports missing {spec}"
            else:
                assert spec == "three" or spec.startswith("three/addons/"), f"{module}: bare import {spec}"
    # Nothing in the page or its modules points at the internet.
    for path in [*STATIC_DIR.glob("*.html"), *STATIC_DIR.glob("*.js"), *STATIC_DIR.glob("*.css")]:
        assert not re.search(r"(src|href)=\"https?://|from \"https?://|import\(\"https?://", path.read_text()), path


@needs_bundle
def test_build_replaces_a_damaged_vendor_file() -> None:
    spark = VENDOR_DIR / "spark" / "spark.module.js"
    spark.write_text("// truncated")
    assert build.build()["copied"] == 1
    assert spark.stat().st_size > 1_000_000


def test_missing_npm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_node_modules_current", lambda: False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="npm not found.*make viewer"):
        build.build()
    assert build.main([]) == 2

