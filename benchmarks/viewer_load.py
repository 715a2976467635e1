"""Viewer load time and frame rate: a 1M-splat scene from localhost into headless Chromium.

What it measures (all in the real page, against the real service on 127.0.0.1):
  - page modules running: navigation start -> viewer.js executing (HTML + three.js + Spark from /static/vendor)
  - first /info: -> the job's state and start camera arrived
  - file parsed: -> the .splat downloaded and turned into Spark's packed splats
  - first frame: -> first frame drawn after the file was parsed (finished on the GPU: one pixel read back)
  - splats visible: -> first frame with splat pixels on screen (Spark generates and sorts splats after parsing;
    the page reads a 5x5 pixel grid back after each frame until one is lit, only with ?timing=1)
  - frame rate: frames per second while drawing every animation frame and orbiting 0.5 degree per frame (Spark
    re-sorts as the view changes)

Rendering is SOFTWARE: Debian's Chromium with WebGL on SwiftShader (no GPU), on whatever CPU runs this (the
numbers in BENCHMARKS.md come from the shared 2-core development machine). A desktop GPU is far faster.

    .venv/bin/python benchmarks/viewer_load.py                    # 1M splats, 1280x720
    .venv/bin/python benchmarks/viewer_load.py --splats 200000 --width 640 --height 360
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from splatworks.viewer.camera import viewer_start_camera
from splatworks.viewer.testing import (BrowserDriver, browser_missing, held_executor, random_params, ring_scene,
                                       serve, write_checkpoint)


def run(splats: int, width: int, height: int, fps_seconds: float, screenshot: Path | None,
        quality: str = "balanced") -> dict:
    from splatworks.service.admin import import_job_dir
    from splatworks.service.app import create_app
    from splatworks.service.settings import ServiceSettings

    with tempfile.TemporaryDirectory(prefix="viewer_bench_") as tmp:
        tmp = Path(tmp)
        folder = tmp / "job"
        scene = ring_scene(n=8, radius=3.0, height=0.8, width_px=width, height_px=height)
        t0 = time.perf_counter()
        ckpt = write_checkpoint(folder / "gs_output", 1000, random_params(splats, radius=1.0))
        scene.save(folder / "colmap")
        write_s = time.perf_counter() - t0
        size = (ckpt / "scene.splat").stat().st_size
        settings = ServiceSettings(data_dir=tmp / "data")
        _, pub_key = import_job_dir(settings, folder)
        app = create_app(settings, executor=held_executor())
        with serve(app) as url, BrowserDriver(width, height) as browser:
            t_nav = time.perf_counter()
            browser.goto(f"{url}/v/{pub_key}?timing=1&quality={quality}")
            browser.wait("window.splatworks && window.splatworks.timings.firstVisible !== null", timeout=900)
            wall_first_frame = time.perf_counter() - t_nav
            timings = browser.eval("window.splatworks.timings")
            n = browser.eval("window.splatworks.numSplats")
            webgl = browser.eval("window.splatworks.webglRenderer")
            print(f"{n} splats: splats on screen {timings['firstVisible'] / 1000:.1f} s after navigation "
                  f"(wall {wall_first_frame:.1f} s); measuring frame rate...", file=sys.stderr, flush=True)
            # Let Spark finish its first sort before measuring steady drawing.
            time.sleep(2.0)
            # At least 3 frames each: software rendering of 1M splats can take seconds per frame.
            fps = browser.eval(f"window.splatworks.measureFps({fps_seconds}, 0.5, 3)")
            print(f"orbiting: {fps}", file=sys.stderr, flush=True)
            fps_still = browser.eval(f"window.splatworks.measureFps({fps_seconds}, 0, 3)")
            print(f"still: {fps_still}", file=sys.stderr, flush=True)
            if screenshot:
                browser.call("screenshot", path=str(screenshot), timeout_ms=300_000)
            errors = [line for line in browser.logs() if line.startswith(("pageerror", "external:"))]
    return {
        "splats": splats, "splats_loaded": n, "file_mb": round(size / 1e6, 1), "viewport": f"{width}x{height}",
        "renderer": "headless Chromium, WebGL on SwiftShader (software, no GPU)", "webgl_renderer": webgl,
        "quality": quality,
        "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "write_splat_s": round(write_s, 2),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 1),  # the machine is shared: other work skews these
        "modules_running_ms": round(timings["moduleStart"]), "first_info_ms": round(timings["firstInfo"]),
        "file_parsed_ms": round(timings["firstLoad"]), "first_frame_ms": round(timings["firstFrame"]),
        "splats_visible_ms": round(timings["firstVisible"]),
        "first_frame_wall_s": round(wall_first_frame, 2),
        "fps_orbiting": round(fps["fps"], 2), "fps_still": round(fps_still["fps"], 2),
        "fps_seconds": fps_seconds, "page_errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splats", type=int, default=1_000_000, help="number of Gaussians in the scene")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    parser.add_argument("--height", type=int, default=720, help="viewport height in CSS pixels")
    parser.add_argument("--fps-seconds", type=float, default=5.0, help="how long each frame-rate run lasts")
    parser.add_argument("--out", type=Path, default=Path("bench_out/viewer_load.json"), help="JSON results file")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save the last frame as a PNG")
    parser.add_argument("--quality", choices=("fast", "balanced", "best"), default="balanced",
                        help="the viewer's quality setting (fast: half resolution; the default on software WebGL)")
    args = parser.parse_args(argv)
    reason = browser_missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    result = run(args.splats, args.width, args.height, args.fps_seconds, args.screenshot, args.quality)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"\n| {result['splats']:,} splats ({result['file_mb']} MB) | {result['viewport']} {result['quality']} | "
          f"{result['splats_visible_ms'] / 1000:.1f} s | {result['fps_orbiting']:.3f} | {result['fps_still']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
