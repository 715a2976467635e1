"""``splatworks dynamic train | render | export | eval``: the sequential 4D Gaussian trainer's commands.

Registered into ``splatworks dynamic`` by ``dynamic/cli.py`` through :func:`register_dynamic`. ``--model
mixvoxels`` hands training (and rendering of its outputs) to ``splatworks.voxels`` when it is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from splatworks.config import add_arguments, from_args, to_dict
from splatworks.errors import UserError

TRAIN_HELP = """\
Train a 4D scene from a prepared multi-view dataset (`splatworks dynamic prepare`).

gaussians (default): frame 0 like a static scene, then each frame from the previous one, with a static
constraint (masks: white = static), pruning, gradient clipping and a frozen static layer. Resumes by default.

Examples:
  splatworks dynamic train data/scene -o out/scene
  splatworks dynamic train data/scene -o out/quick --preset fast --max-frames 30
  splatworks dynamic train data/scene -o out/scene --depth distill --depth-file all_depth.npy
  splatworks dynamic train data/scene -o out/voxels --model mixvoxels
"""

RENDER_HELP = """\
Render a fixed-camera video of a trained 4D scene: a training camera, the held-out camera (side by side
with ground truth by default), or any pose (--pose pose.json: a 4x4 world-to-camera matrix, OpenCV axes).

Examples:
  splatworks dynamic render out/scene --camera 0 -o cam0.mp4
  splatworks dynamic render out/scene --camera cam06 --fps 30 -o heldout.mp4
"""


class _Bars:
    """A ProgressFn that drives one tqdm bar per stage (frames); ``close()`` when the command ends."""

    STAGES = ("dynamic.train", "dynamic.render", "export4d")

    def __init__(self, label: str) -> None:
        self.label, self.bars = label, {}

    def __call__(self, ev) -> None:
        from tqdm import tqdm

        if ev.stage not in self.STAGES:
            return
        bar = self.bars.get(ev.stage)
        if bar is None:
            bar = self.bars[ev.stage] = tqdm(total=ev.total or None, desc=self.label, unit="frame")
        bar.total = ev.total or bar.total
        bar.update(max(0, ev.step - bar.n))
        if ev.message:
            bar.set_postfix_str(ev.message[:60])

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _run_train(args: argparse.Namespace) -> int:
    from splatworks.dynamic.dataset import DynamicDataset

    if args.model == "mixvoxels":
        try:
            from splatworks.voxels import preset as vpreset, train_mixvoxels
        except ImportError as exc:
            raise UserError("--model mixvoxels needs splatworks.voxels, which is not installed here") from exc
        ds = DynamicDataset.load(args.dataset)
        res = train_mixvoxels(ds, args.output, vpreset(), resume=not args.no_resume, show_progress_bar=True)
        print(f"mixvoxels model written to {args.output}: {res}")
        return 0
    from splatworks.dynamic.sequential import SequentialConfig, preset, train_sequence

    cfg = from_args(SequentialConfig, args, base=preset(args.preset))
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    try:
        ds = DynamicDataset.load(args.dataset)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    bars = _Bars("training")
    try:
        lines = train_sequence(ds, args.output, cfg, progress=bars, resume=not args.no_resume)
    finally:
        bars.close()
    if lines:
        later = [l["seconds"] for l in lines if l["frame"] != ds.frames[0]]
        msg = f"trained {len(lines)} frames into {args.output}"
        if later:
            msg += f"; {sum(later) / len(later):.1f} s per frame after frame 0"
        ps = [l["psnr"] for l in lines if "psnr" in l]
        if ps:
            msg += f"; held-out PSNR mean {sum(ps) / len(ps):.2f} dB"
        print(msg)
    else:
        print(f"all frames already trained in {args.output}")
    return 0


def _is_voxels_output(path: Path) -> bool:
    return (path / "checkpoint.pt").exists() and not (path / "state.json").exists()


def _run_render(args: argparse.Namespace) -> int:
    import numpy as np

    if _is_voxels_output(Path(args.train_dir)):
        from splatworks.voxels import render_video as vrender

        path = vrender(args.train_dir, args.camera, args.output, fps=args.fps)
        print(f"wrote {path}")
        return 0
    from splatworks.dynamic.render import render_video

    pose = None
    if args.pose:
        doc = json.loads(Path(args.pose).read_text())
        pose = np.asarray(doc["world_to_camera"] if isinstance(doc, dict) else doc, dtype=np.float64)
    bars = _Bars("rendering")
    try:
        res = render_video(args.train_dir, args.output, camera=args.camera, fps=args.fps, pose=pose,
                           side_by_side=args.side_by_side, dataset_root=args.dataset, progress=bars)
    finally:
        bars.close()
    print(f"wrote {res.path}: {res.frames} frames from {res.camera}"
          + (" (rendering | ground truth)" if res.side_by_side else ""))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from splatworks.dynamic.export4d import export_4d

    bars = _Bars("exporting")
    try:
        m = export_4d(args.train_dir, args.output, progress=bars)
    finally:
        bars.close()
    b = m["bytes"]
    print(f"4D export in {args.output}: static layer {b['static'] / 1e6:.2f} MB, {m['frames_ready']} frames, "
          f"{b['per_frame_mean'] / 1e6:.3f} MB per frame (frame 0 {b['per_frame'][0] / 1e6:.3f} MB; largest "
          f"{b['per_frame_max'] / 1e6:.3f} MB; {m.get('encoding', 'full')} encoding)")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from splatworks.dynamic.dataset import DynamicDataset
    from splatworks.dynamic.metrics4d import evaluate_sequence
    from splatworks.dynamic.render import SequenceReader

    reader = SequenceReader(args.train_dir)
    ds = DynamicDataset.load(args.dataset or reader.source["dataset"])
    res = evaluate_sequence(args.train_dir, ds, camera=args.camera)
    text = json.dumps(res, indent=1)
    if args.output:
        Path(args.output).write_text(text)
    print(f"{res['camera']}: PSNR {res['psnr_mean']:.2f} dB, SSIM {res['ssim_mean']:.4f}, static PSNR "
          f"{res['psnr_static_mean']:.2f} dB, moving-pixel PSNR {res['psnr_dynamic_mean']:.2f} dB, flicker {res['flicker_levels']:+.3f}/255 "
          f"(frame to frame {res['frame_to_frame_levels']:+.3f}/255), drift "
          f"{res['drift_db_per_frame']:+.4f} dB/frame (rendered with near plane {res['near_plane']:.3g} scene units)")
    return 0


def register_dynamic(dsub: argparse._SubParsersAction) -> None:
    from splatworks.dynamic.sequential import PRESETS, SequentialConfig

    taken = set(getattr(dsub, "choices", {}) or {})
    if "train" not in taken:
        p = dsub.add_parser("train", help="train a 4D scene (sequential Gaussians or mixvoxels)",
                            description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("dataset", type=Path, help="prepared dataset folder (dataset.json)")
        p.add_argument("-o", "--output", type=Path, required=True, help="output folder (resumed when it exists)")
        p.add_argument("--model", default="gaussians", choices=("gaussians", "mixvoxels"), help="4D representation")
        p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named settings to start from")
        p.add_argument("--no-resume", action="store_true", help="start over instead of continuing")
        p.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
        add_arguments(p, SequentialConfig, presets=PRESETS)
        p.set_defaults(func=_run_train)
    if "render" not in taken:
        p = dsub.add_parser("render", help="fixed-camera video of a trained 4D scene", description=RENDER_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("train_dir", type=Path, help="output folder of `dynamic train`")
        p.add_argument("--camera", default="0", help="rig camera name (cam03) or index (default 0)")
        p.add_argument("--fps", type=float, default=None, help="frame rate (default: the dataset's)")
        p.add_argument("--pose", type=Path, default=None,
                       help="JSON with a 4x4 world_to_camera (OpenCV axes); uses --camera's intrinsics")
        p.add_argument("--side-by-side", action=argparse.BooleanOptionalAction, default=None,
                       help="rendering | ground truth (default: on for held-out cameras)")
        p.add_argument("--dataset", type=Path, default=None, help="dataset folder (default: the one trained on)")
        p.add_argument("-o", "--output", type=Path, required=True, help="video file to write (.mp4)")
        p.set_defaults(func=_run_render)
    if "export" not in taken:
        p = dsub.add_parser("export", help="4D export for the web viewer (static layer + per-frame layers)")
        p.add_argument("train_dir", type=Path, help="output folder of `dynamic train`")
        p.add_argument("-o", "--output", type=Path, required=True, help="export folder (manifest.json, .splat)")
        p.set_defaults(func=_run_export)
    if "eval" not in taken:
        p = dsub.add_parser("eval", help="held-out PSNR/SSIM per frame, background flicker and drift")
        p.add_argument("train_dir", type=Path, help="output folder of `dynamic train`")
        p.add_argument("--camera", default=None, help="camera to score (default: the first held-out camera)")
        p.add_argument("--dataset", type=Path, default=None, help="dataset folder (default: the one trained on)")
        p.add_argument("-o", "--output", type=Path, default=None, help="write the results as JSON here")
        p.set_defaults(func=_run_eval)
