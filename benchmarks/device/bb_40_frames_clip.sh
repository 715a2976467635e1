# Issue 7: first 40 basketball frames with per-Gaussian gradient clipping (the new default), CLI path.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/bbsvc/whl/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
date -u
timeout 500 python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/c40 --frames 40 --time-budget 380 > /tmp/v_c40.log 2>&1
echo "rc=$?"; grep -E "^\|" /tmp/v_c40.log | tail -1; grep -iE "error|Traceback" /tmp/v_c40.log | tail -3
python3 - <<'PY'
import json
for l in open("/tmp/v/c40/train/metrics.jsonl"):
    m = json.loads(l)
    if m["frame"] % 4 == 0 or m["frame"] > 36:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in ("frame", "iterations", "seconds", "frame_wall_s", "loss_final", "grad_norm_max", "clipped_steps", "psnr", "psnr_static", "n_dynamic")})
PY
cp /tmp/v/c40/heldout.mp4 /tmp/v/c40/summary.json /tmp/v/c40/train/metrics.jsonl /tmp/v_c40.log $OUT/ 2>/dev/null; date -u
