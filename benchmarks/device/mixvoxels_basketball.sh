#!/usr/bin/env bash
# Issue 9 device run: MixVoxels (default preset T) on CMU Panoptic basketball, 150 frames, cam01 held out.
# From the repository root, on the device (carry [".device/mv"]):   bash benchmarks/device/mixvoxels_basketball.sh $OUT
# Writes to $OUT (flat, <= 8 files): mixvoxels_basketball.json (report, rewritten after every phase),
# mixvoxels_basketball.log, mixvoxels_cam01.mp4 (held-out video), mixvoxels_metrics.json (per-frame metrics),
# mixvoxels_result.json (training result), mixvoxels_config.json (resolved config), mixvoxels_env.txt,
# mixvoxels_profile.json (seconds per training iteration of the preset, measured first; PROFILE=0 skips).
# Env overrides (CPU checks): FRAMES (0 = all), SCALE, PRESET, BUDGET_MIN (training-loop cap, minutes),
# WALL_S (hard cap on the whole benchmark, seconds), EVAL_CHUNK, PYTHON, WORK, EXTRA (more benchmark args).
set -u
OUT=${1:?usage: bash benchmarks/device/mixvoxels_basketball.sh OUT}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=${MV_DIR:-$REPO/.device/mv}   # carried data: bb/{videos,masks,calibration.json}, whl/
FRAMES=${FRAMES:-0} SCALE=${SCALE:-1.0} PRESET=${PRESET:-T} BUDGET_MIN=${BUDGET_MIN:-5.5}
WALL_S=${WALL_S:-520} EVAL_CHUNK=${EVAL_CHUNK:-32768} PY=${PYTHON:-python3} WORK=${WORK:-/tmp/mv_bb}
mkdir -p "$OUT"
ENV_TXT="$OUT/mixvoxels_env.txt"
SITE=/tmp/mv_site
# tqdm is optional (log lines instead); install the carried wheel only where it is missing, never from an index
if ! "$PY" -c "import tqdm" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$HERE"/whl/*.whl >> "$ENV_TXT" 2>&1 \
    || echo "tqdm wheel not installed (optional)" >> "$ENV_TXT"
fi
export PYTHONPATH="$SITE:$REPO/src" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
  "$PY" -c "import sys, torch, numpy, cv2, PIL; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'PIL', PIL.__version__)"
  "$PY" -c "import importlib.util as u; print({m: u.find_spec(m) is not None for m in ('av', 'tqdm', 'scipy')})"
} >> "$ENV_TXT" 2>&1

cd "$REPO" || exit 1
# Measured cost of one iteration of the preset at its final grid size (synthetic rays; ~15 s on a GPU).
if [ "${PROFILE:-1}" = 1 ]; then
  timeout -k 5 60 "$PY" benchmarks/mixvoxels_basketball.py --profile-iteration --preset "$PRESET" \
    > "$OUT/mixvoxels_profile.json" 2>> "$ENV_TXT" || echo "profile failed or timed out" >> "$ENV_TXT"
fi
# Rebuilt from scratch each call (the work folder does not survive between device calls anyway).
rm -rf "$WORK"
timeout -k 10 "$WALL_S" "$PY" benchmarks/mixvoxels_basketball.py -o "$WORK" --data "$HERE/bb" --frames "$FRAMES" \
  --scale "$SCALE" --preset "$PRESET" --time-budget-min "$BUDGET_MIN" --set "eval_chunk=$EVAL_CHUNK" \
  --report "$OUT/mixvoxels_basketball.json" ${EXTRA:-} > "$OUT/mixvoxels_basketball.log" 2>&1
rc=$?
echo "benchmark rc=$rc ($( [ $rc = 124 ] && echo 'killed by WALL_S' || echo exited))" >> "$OUT/mixvoxels_basketball.log"
M="$WORK/model"
[ -f "$M/render_cam01.mp4" ] && cp "$M/render_cam01.mp4" "$OUT/mixvoxels_cam01.mp4"
[ -f "$M/metrics.json" ] && cp "$M/metrics.json" "$OUT/mixvoxels_metrics.json"
[ -f "$M/result.json" ] && cp "$M/result.json" "$OUT/mixvoxels_result.json"
[ -f "$M/config.json" ] && cp "$M/config.json" "$OUT/mixvoxels_config.json"
date -u >> "$ENV_TXT"
tail -n 3 "$OUT/mixvoxels_basketball.log"
ls -la "$OUT"
exit $rc
