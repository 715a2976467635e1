# Issue 7 frame-0 / per-frame experiments on basketball (CLI path), 6 frames each: baseline vs dense MVS points.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/bbsvc/whl/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
F=${FRAMES:-5}
run() {  # name, timeout, args...
  local name=$1 t=$2; shift 2
  date -u +"%T start $name"
  timeout $t python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/$name --frames $F "$@" > /tmp/v_$name.log 2>&1
  echo "rc=$? $name"; grep -E "^\|" /tmp/v_$name.log | tail -1
  python3 - /tmp/v/$name <<'PY'
import json, sys
d = sys.argv[1]
try:
    for l in open(d + "/train/metrics.jsonl"):
        m = json.loads(l); print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items() if k in ("frame", "iterations", "seconds", "frame_wall_s", "n_gaussians", "n_dynamic", "psnr", "psnr_static", "loss_final", "stopped_early")})
    s = json.load(open(d + "/summary.json")); print("points", s.get("points"), json.dumps(s.get("points_report"))[:600])
except Exception as e:
    print("no metrics", e)
PY
}
run mvs 230 --dense on
# the same frame 0, later frames with 4 views per optimizer step
mkdir -p /tmp/v/mvs_vps4 && ln -s /tmp/v/mvs/dataset /tmp/v/mvs_vps4/dataset && cp -r /tmp/v/mvs/train /tmp/v/mvs_vps4/train && python3 - <<'PY'
import json, pathlib
t = pathlib.Path("/tmp/v/mvs_vps4/train")
(t / "state.json").write_text(json.dumps({"frames_done": [0], "frames_total": json.loads((t / "state.json").read_text())["frames_total"]}))
(t / "metrics.jsonl").write_text((t / "metrics.jsonl").read_text().splitlines()[0] + "\n")
for f in (t / "frames").glob("*.pt"):
    if f.name != "000000.pt": f.unlink()
PY
run mvs_vps4 100 --set views_per_step=4
ln -s /tmp/v/mvs/dataset /tmp/v/mvs_sh1/dataset 2>/dev/null || { mkdir -p /tmp/v/mvs_sh1 && ln -s /tmp/v/mvs/dataset /tmp/v/mvs_sh1/dataset; }
run mvs_sh1 100 --set sh_degree=1 max_frames=2
python3 - <<'PY'
import json, numpy as np
from splatworks.depth.files import write_all_depth
root = "/tmp/v/mvs/dataset/calibration/dense_depth"
d = np.load(root + ".npy"); cams = json.load(open(root + ".json"))["cameras"]
maps = {c["name"].split("/")[0]: d[i] for i, c in enumerate(cams)}
print("dense depth maps", {k: float((v > 0).mean()) for k, v in maps.items()})
write_all_depth("/tmp/v/mvs_depth.npy", maps)
PY
mkdir -p /tmp/v/mvs_distill && ln -s /tmp/v/mvs/dataset /tmp/v/mvs_distill/dataset
run mvs_distill 100 --set depth=distill depth_file=/tmp/v/mvs_depth.npy max_frames=2
cd /tmp/v && for n in mvs mvs_vps4 mvs_sh1 mvs_distill; do cp $n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl /tmp/v/*/train/config.json /tmp/v/mvs/dataset/dataset.json 2>/dev/null; date -u
