# Issue 7: frame-0 free-space carving (dense MVS depth) variants + per-frame speed with views_per_step, 5 frames.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/bbsvc/whl/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
F=5
run() {  # name, timeout, args...
  local name=$1 t=$2; shift 2
  date -u +"%T start $name"
  timeout $t python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/$name --frames $F "$@" > /tmp/v_$name.log 2>&1
  echo "rc=$? $name"; grep -E "^\|" /tmp/v_$name.log | tail -1; grep -iE "error|free-space" /tmp/v_$name.log | tail -3
  python3 - /tmp/v/$name <<'PY'
import json, sys
d = sys.argv[1]
try:
    for l in open(d + "/train/metrics.jsonl"):
        m = json.loads(l); print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items() if k in ("frame", "iterations", "seconds", "frame_wall_s", "n_gaussians", "n_dynamic", "psnr", "psnr_static", "loss_final", "stopped_early")})
except Exception as e:
    print("no metrics", e)
PY
}
share() { mkdir -p /tmp/v/$1 && ln -s /tmp/v/w1/dataset /tmp/v/$1/dataset; }
run w1 120 --dense on --set free_space_weight=1.0 max_frames=1
share w3; run w3 90 --set free_space_weight=3.0 max_frames=1
share w10; run w10 90 --set free_space_weight=10.0 max_frames=1
share w3m1; run w3m1 90 --set free_space_weight=3.0 free_space_min_views=1 max_frames=1
cd /tmp/v && for n in w1 w3 w10 w3m1; do cp $n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
