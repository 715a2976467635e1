"""Per-frame size of a delta-encoded 4D export, counted straight from a sequential training folder (issue 7).

A frame's delta holds the dynamic-layer rows whose 32-byte ``.splat`` record differs from the previous frame's;
frame 0 is the whole dynamic layer. SWD3 (what ``splatworks dynamic export`` writes now) stores a row whose scale
and colour bytes are unchanged as a motion record (index 4 B + position and rotation 16 B), a row whose scale bytes
alone are unchanged (it moved and faded or recoloured) as a motion+rgba record (index 4 B + position, RGBA and
rotation 20 B), and any other changed row as a full record (index 4 B + record 32 B), after a 20-byte header.
SWD2 (before) had no motion+rgba kind (those rows were full records; 16-byte header); SWD1 stored every changed
row as a full record after a 12-byte header. This counts all three from the trainer's ``frames/NNNNNN.pt`` without
writing an export, so a device run can report sizes for a folder too large to bring back, and it cross-checks
``splatworks dynamic export``'s own sizes (its manifest's ``bytes`` and ``records``).

JSON: ``bytes``, ``bytes_mean``, ... are SWD3 sizes (``format``: "SWD3"), ``full_rows`` / ``motion_rows`` /
``motion_rgba_rows`` the record counts per frame (the export's own choice of kinds); ``changed_rows``, and the
SWD2 and SWD1 sizes under ``swd2`` and ``swd1``, stay comparable with older results (before SWD3 the top-level
sizes were SWD2's, before SWD2 SWD1's).

    python benchmarks/delta_sizes.py TRAIN_DIR [-o sizes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from splatworks.dynamic import sequential as seq
from splatworks.dynamic.export4d import Delta, hidden_records, splat_records, swd2_size, swd3_size


def records_by_id(frame_rows: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids (D,), records (D, 32) uint8) of one frame's non-frozen rows, in id order (the export's encoder)."""
    ids = frame_rows["ids"].numpy()
    by_id = np.argsort(ids, kind="stable")
    return ids[by_id], splat_records({k: frame_rows[k] for k in seq.PARAM_KEYS})[by_id]


def size_stats(sizes: list[int]) -> dict:
    after = sizes[1:] or [0]
    return {"bytes": sizes, "bytes_mean": float(np.mean(sizes)), "bytes_max": int(max(sizes)),
            "bytes_mean_after_first": float(np.mean(after)), "bytes_max_after_first": int(max(after))}


def delta_sizes(train_dir: Path) -> dict:
    frames = seq.trained_frames(train_dir)
    base_ids, prev = None, None
    changed, full, motion, motion_rgba, swd1, swd2, swd3 = [], [], [], [], [], [], []
    for f in frames:
        ids, rec = records_by_id(torch.load(seq.frame_file(train_dir, f), map_location="cpu"))
        if base_ids is None:
            base_ids, prev = ids, rec
            changed.append(len(ids))
            full.append(len(ids))
            motion.append(0)
            motion_rgba.append(0)
            for sizes in (swd1, swd2, swd3):
                sizes.append(32 * len(ids))
            continue
        # Pruned rows draw nothing from here on, as in the export.
        cur = hidden_records(prev)
        pos = np.searchsorted(base_ids, ids)
        if len(ids) and (pos.max() >= len(base_ids) or not np.array_equal(base_ids[pos], ids)):
            raise SystemExit(f"frame {f} has Gaussians that frame {frames[0]} has not")
        cur[pos] = rec
        delta = Delta.between(prev, cur)       # the export's own choice of record kinds
        n = delta.counts()
        changed.append(delta.rows)
        full.append(n["full"])
        motion.append(n["motion"])
        motion_rgba.append(n["motion_rgba"])
        swd1.append(12 + 36 * delta.rows)
        swd2.append(swd2_size(n["full"] + n["motion_rgba"], n["motion"]))  # SWD2 wrote motion+rgba rows whole
        swd3.append(swd3_size(n["full"], n["motion"], n["motion_rgba"]))
        prev = cur
    return {"frames": frames, "dynamic_rows": int(len(base_ids)), "format": "SWD3", "changed_rows": changed,
            "full_rows": full, "motion_rows": motion, "motion_rgba_rows": motion_rgba, **size_stats(swd3),
            "swd2": size_stats(swd2), "swd1": size_stats(swd1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_dir", type=Path)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    out = delta_sizes(args.train_dir)
    text = json.dumps(out)
    if args.out:
        args.out.write_text(text)
    for name, s in (("SWD3", out), ("SWD2 (comparison)", out["swd2"]), ("SWD1 (comparison)", out["swd1"])):
        print(f"{name}: dynamic rows {out['dynamic_rows']}; frame 0 {s['bytes'][0] / 1e6:.2f} MB; later frames mean "
              f"{s['bytes_mean_after_first'] / 1e6:.3f} MB, max {s['bytes_max_after_first'] / 1e6:.3f} MB; "
              f"all frames mean {s['bytes_mean'] / 1e6:.3f} MB")
    later = max(1, len(out["frames"]) - 1)
    per = {k: sum(out[f"{k}_rows"][1:]) / later for k in ("motion", "motion_rgba", "full")}
    print(f"later frames: {per['motion']:.0f} motion, {per['motion_rgba']:.0f} motion+rgba and {per['full']:.0f} "
          "full records per frame (SWD3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
