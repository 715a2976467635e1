# Shared by the basketball device calls: `source benchmarks/device/lib_bb.sh` from the repository root.
# bb_setup: wheels + prebuilt gsplat from the carried folders, environment, the capture in /tmp/bbp.
# bb_run NAME TIMEOUT ARGS...: one benchmarks/dynamic_basketball.py run into /tmp/v/NAME, its table row and frames.
# bb_share NAME FROM: NAME reuses FROM's prepared dataset. bb_from_frame0 NAME FROM: NAME continues FROM's frame 0.
set -o pipefail
bb_setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .device/bbsvc/whl/*.whl || exit 1
  cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
  export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
    PYTHONUNBUFFERED=1
  python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
  mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
  date -u
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
