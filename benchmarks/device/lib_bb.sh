# Shared by the basketball device calls: `source benchmarks/device/lib_bb.sh` from the repository root.
# bb_setup: wheels (.device/bbsvc/whl) + gsplat (.device/gsw wheel, .device/bb2 prebuilt kernels if any), environment, the capture in /tmp/bbp.
# bb_run NAME TIMEOUT ARGS...: one benchmarks/dynamic_basketball.py run into /tmp/v/NAME, its table row and frames.
# bb_share NAME FROM: NAME reuses FROM's prepared dataset. bb_from_frame0 NAME FROM: NAME continues FROM's frame 0.
set -o pipefail
bb_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target ${SITE:-/tmp/site} \
    .device/bbsvc/whl/*.whl || exit 1
  export PYTHONPATH=${SITE:-/tmp/site}:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
  bb_gsplat || exit 1
  python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
  mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
  date -u
}
# gsplat: with .device/bb2/gsplat_cuda.so.xz (kernels built on an earlier device call), the wheel's Python code plus
# a `gsplat.csrc` shim that loads that .so (gsplat imports `gsplat.csrc` before it would compile); otherwise the
# wheel alone (its kernels compile on first use, ~70 s) and the built .so comes back as $OUT/gsplat_cuda.so.xz.
bb_gsplat() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target ${SITE:-/tmp/site} \
    .device/gsw/gsplat-*.whl || return 1
  if [ -f .device/bb2/gsplat_cuda.so.xz ]; then
    xz -d -c .device/bb2/gsplat_cuda.so.xz > ${SITE:-/tmp/site}/gsplat_cuda.so && export GSPLAT_SO=${SITE:-/tmp/site}/gsplat_cuda.so
    cat > ${SITE:-/tmp/site}/gsplat/csrc.py <<'SHIM'
import importlib.machinery, importlib.util, os, sys
_loader = importlib.machinery.ExtensionFileLoader("gsplat_cuda", os.environ["GSPLAT_SO"])
_spec = importlib.util.spec_from_loader("gsplat_cuda", _loader)
sys.modules[__name__] = importlib.util.module_from_spec(_spec)
_loader.exec_module(sys.modules[__name__])
SHIM
  else
    local t0=$(date +%s)
    python3 -c "from gsplat.cuda._backend import _C; assert _C is not None; print('gsplat built', _C.__file__)" || return 1
    echo "gsplat kernels compiled in $(( $(date +%s) - t0 )) s"
    so=$(python3 -c "from gsplat.cuda._backend import _C; print(_C.__file__)")
    [ -n "${OUT:-}" ] && xz -T0 -6 -c "$so" > $OUT/gsplat_cuda.so.xz && ls -la $OUT/gsplat_cuda.so.xz
  fi
}
bb_frames_table() {  # per-frame lines of a run folder
  python3 - "$1" <<'PY'
import json, sys
keys = ("frame", "iterations", "seconds", "frame_wall_s", "n_gaussians", "n_dynamic", "psnr", "psnr_static",
        "loss_final", "grad_norm_max", "clipped_steps", "stopped_early")
try:
    for line in open(sys.argv[1] + "/train/metrics.jsonl"):
        m = json.loads(line)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in keys})
except OSError as e:
    print("no metrics", e)
PY
}
bb_run() {
  local name=$1 t=$2; shift 2
  date -u +"%T start $name"
  timeout "$t" python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/$name --frames "${F:-5}" "$@" \
    > /tmp/v_$name.log 2>&1
  echo "rc=$? $name"; grep -E "^\|" /tmp/v_$name.log | tail -1; grep -iE "Traceback|Error" /tmp/v_$name.log | tail -2
  bb_frames_table /tmp/v/$name
}
bb_share() { mkdir -p /tmp/v/$1 && ln -s /tmp/v/$2/dataset /tmp/v/$1/dataset; }
bb_from_frame0() {
  bb_share "$1" "$2" && cp -r /tmp/v/$2/train /tmp/v/$1/train && python3 - "/tmp/v/$1/train" <<'PY'
import json, pathlib, sys
t = pathlib.Path(sys.argv[1])
total = json.loads((t / "state.json").read_text())["frames_total"]
(t / "state.json").write_text(json.dumps({"frames_done": [0], "frames_total": total}))
(t / "metrics.jsonl").write_text((t / "metrics.jsonl").read_text().splitlines()[0] + "\n")
for f in (t / "frames").glob("*.pt"):
    if f.name != "000000.pt":
        f.unlink()
PY
}
