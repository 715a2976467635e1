# Issue 7: the first 40 basketball frames with per-Gaussian gradient clipping, defaults otherwise.
source benchmarks/device/lib_bb.sh; bb_setup
F=40 bb_run c40 500 --time-budget 380 --set grad_clip_mode=gaussian
cp /tmp/v/c40/heldout.mp4 /tmp/v/c40/summary.json /tmp/v/c40/train/metrics.jsonl /tmp/v_c40.log $OUT/ 2>/dev/null; date -u
