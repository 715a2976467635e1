"""Where does the background flicker come from? Split a held-out video's flicker by distance to the moving pixels.

``dynamic eval``'s flicker is the mean, over the camera's always-static pixels (static in its mask at every frame),
of the rendered video's temporal std minus the ground truth's. This script reads a side-by-side video (``splatworks
dynamic render OUT --camera HELD_OUT``: rendering | ground truth, as the basketball benchmark keeps it) and that
camera's masks from a prepared dataset, and splits the same sum into bands of distance (px) from the nearest pixel
that is moving at some frame: if the excess std sits in the first few pixels, it is the people's splats spilling
over their silhouettes (or their left-behind ghosts); if it is spread over the court, it is the background itself.

The video is H.264 on both halves, so the numbers differ a little from ``dynamic eval`` (which renders losslessly);
the split is what this is for. CPU, a few seconds per 150 frames:

    python benchmarks/flicker_map.py heldout.mp4 DATASET [--camera cam01] [--out flicker_map.json] [--png map.png]
        [--frames N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BANDS_PX = (0, 2, 4, 8, 16, 32, 64, 10_000)


def read_side_by_side(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) float32 rendering and ground truth in [0, 1] from a ``rendering | truth`` video."""
    import av

    left, right = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            w = rgb.shape[1] // 2
            left.append(rgb[:, :w])
            right.append(rgb[:, w:2 * w])
    return np.stack(left).astype(np.float32) / 255.0, np.stack(right).astype(np.float32) / 255.0


def flicker_by_distance(rendered: np.ndarray, truth: np.ndarray, static: np.ndarray) -> dict:
    """Split of ``metrics4d.background_flicker`` (T, H, W, 3 videos; (H, W) always-static mask) by distance band.

    Returns per band: its share of the static pixels, the mean excess std there (levels of 1/255) and the band's
    contribution to the total (share x excess; the contributions add up to the total flicker in levels).
    """
    import cv2

    excess = (rendered.std(axis=0) - truth.std(axis=0)).mean(axis=-1) * 255.0      # (H, W) levels
    distance = cv2.distanceTransform(static.astype(np.uint8), cv2.DIST_L2, 5)    # px to the nearest moving pixel
    total = float(excess[static].mean())
    bands = []
    for lo, hi in zip(BANDS_PX, BANDS_PX[1:]):
        sel = static & (distance > lo) & (distance <= hi)
        if not sel.any():
            continue
        share = float(sel.sum() / static.sum())
        mean = float(excess[sel].mean())
        bands.append({"px": [lo, hi], "share": round(share, 4), "excess_levels": round(mean, 3),
                      "contribution_levels": round(share * mean, 3)})
    return {"flicker_levels": round(total, 3), "static_fraction": round(float(static.mean()), 4), "bands": bands,
            "excess_map": excess}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path, help="side-by-side held-out video (rendering | ground truth)")
    ap.add_argument("dataset", type=Path, help="the prepared dataset whose masks the run used")
    ap.add_argument("--camera", default=None, help="the video's camera (default: the dataset's first held-out one)")
    ap.add_argument("--out", type=Path, default=None, help="write the split as JSON")
    ap.add_argument("--png", type=Path, default=None, help="write the excess-std map (0 to 10 levels, black = "
                    "moving at some frame)")
    ap.add_argument("--frames", type=int, default=0, help="score only the first N frames (video and masks), to "
                    "compare runs of different lengths (0 = all)")
    args = ap.parse_args()
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.dynamic.metrics4d import static_pixels

    ds = DynamicDataset.load(args.dataset)
    camera = args.camera or ds.test_cameras[0]
    rendered, truth = read_side_by_side(args.video)
    if args.frames:
        rendered, truth = rendered[:args.frames], truth[:args.frames]
    frames = ds.frames[:len(rendered)]
    static = static_pixels(ds, camera, frames)
    if static.shape != rendered.shape[1:3]:
        raise SystemExit(f"the video is {rendered.shape[2]}x{rendered.shape[1]} per half but {camera}'s masks are "
                         f"{static.shape[1]}x{static.shape[0]}: pass the dataset the run used")
    result = flicker_by_distance(rendered, truth, static)
    excess = result.pop("excess_map")
    result.update({"video": str(args.video), "camera": camera, "frames": len(frames)})
    print(f"{camera}, {len(frames)} frames: flicker {result['flicker_levels']:+.2f}/255 over "
          f"{100 * result['static_fraction']:.1f} % of the pixels")
    for b in result["bands"]:
        print(f"  {b['px'][0]:>4}-{b['px'][1]:<5} px from moving pixels: {100 * b['share']:5.1f} % of them, excess "
              f"{b['excess_levels']:+.2f}, contributes {b['contribution_levels']:+.3f}/255")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.png:
        from PIL import Image

        img = (np.clip(excess, 0, 10) / 10 * 255).astype(np.uint8)
        img[~static] = 0
        Image.fromarray(img).save(args.png)


if __name__ == "__main__":
    main()
