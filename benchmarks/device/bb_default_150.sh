# Issue 7 acceptance run: all 150 basketball frames with the default settings, ALONE on the GPU (clean per-frame
# times), then the 4D export's sizes (SWD3, with SWD2/SWD1 for comparison) counted from the training folder, then the GPU tests.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_default_150.sh; bash benchmarks/device/bb_bg.sh poll 560
source benchmarks/device/lib_bb.sh; bb_setup
F=150 bb_run d 1500 > /tmp/v_d.out 2>&1
grep -E "^\||rc=" /tmp/v_d.out | tail -3
python3 benchmarks/delta_sizes.py /tmp/v/d/train -o $OUT/delta_d.json | tail -5
cp /tmp/v/d/summary.json $OUT/summary_d.json; cp /tmp/v/d/heldout.mp4 $OUT/heldout_default.mp4
find /tmp/v/d -name manifest.json | head -1 | xargs -r -I{} cp {} $OUT/manifest_d.json
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/pt/*.whl
timeout 400 python3 -m pytest tests/test_sequential.py tests/test_depth.py tests/test_splat_parity.py \
  -m gpu -q -p no:cacheprovider -rs 2>&1 | tail -15 | tee $OUT/gpu_tests.txt
date -u
