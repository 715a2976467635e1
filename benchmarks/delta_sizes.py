"""Per-frame size of a delta-encoded 4D export, counted straight from a sequential training folder (issue 7).

A frame's delta holds the dynamic-layer rows whose 32-byte ``.splat`` record differs from the previous frame's
(index 4 B + record 32 B each, 12-byte header); frame 0 is the whole dynamic layer. This counts them from the
trainer's ``frames/NNNNNN.pt`` without writing an export, so a device run can report sizes for a folder too large
to bring back, and it cross-checks ``splatworks dynamic export``'s own sizes.

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
from splatworks.splat.io import params_to_splat, splat_order


def records_by_id(frame_rows: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids (D,), records (D, 32) uint8) of one frame's non-frozen rows, in id order."""
    params = {k: frame_rows[k] for k in seq.PARAM_KEYS}
    ordered = params_to_splat(params)
    order = splat_order(params["scales"].numpy(), params["opacities"].numpy())
    rec = np.empty_like(ordered)
    rec[order] = ordered                       # undo the file order: row i = Gaussian i of the frame
    ids = frame_rows["ids"].numpy()
    by_id = np.argsort(ids, kind="stable")
    return ids[by_id], rec.view(np.uint8).reshape(len(rec), 32)[by_id]


def delta_sizes(train_dir: Path) -> dict:
    frames = seq.trained_frames(train_dir)
    base_ids, prev = None, None
    changed, sizes = [], []
    for f in frames:
        ids, rec = records_by_id(torch.load(seq.frame_file(train_dir, f), map_location="cpu"))
        if base_ids is None:
            base_ids, prev = ids, rec
            changed.append(len(ids))
            sizes.append(32 * len(ids))
            continue
        cur = np.zeros_like(prev)              # pruned rows draw nothing (all-zero record)
        pos = np.searchsorted(base_ids, ids)
        if len(ids) and (pos.max() >= len(base_ids) or not np.array_equal(base_ids[pos], ids)):
            raise SystemExit(f"frame {f} has Gaussians that frame {frames[0]} has not")
        cur[pos] = rec
        n = int((cur != prev).any(axis=1).sum())
        changed.append(n)
        sizes.append(12 + 36 * n)
        prev = cur
    after = sizes[1:] or [0]
    return {"frames": frames, "dynamic_rows": int(len(base_ids)), "changed_rows": changed, "bytes": sizes,
            "bytes_mean": float(np.mean(sizes)), "bytes_max": int(max(sizes)),
            "bytes_mean_after_first": float(np.mean(after)), "bytes_max_after_first": int(max(after))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_dir", type=Path)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args(argv)
    out = delta_sizes(args.train_dir)
    text = json.dumps(out)
    if args.out:
        args.out.write_text(text)
    print(f"dynamic rows {out['dynamic_rows']}; frame 0 {out['bytes'][0] / 1e6:.2f} MB; later frames mean "
          f"{out['bytes_mean_after_first'] / 1e6:.3f} MB, max {out['bytes_max_after_first'] / 1e6:.3f} MB; "
          f"all frames mean {out['bytes_mean'] / 1e6:.3f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
