# Issue 7: all 150 basketball frames from ONE frame 0, three continuations side by side on the GPU (per-frame
# times are upper bounds): the defaults (motion-only frames, per-frame active set, rigidity + rotation priors,
# constant-velocity start), velocity only (no priors), and neither. Run it through bb_bg.sh (it outlives a call):
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_priors_150.sh; bash benchmarks/device/bb_bg.sh poll 540
source benchmarks/device/lib_bb.sh; bb_setup
F=150 bb_run base 400 --set max_frames=1
for n in pri vel none; do bb_from_frame0 $n base; done
F=150 bb_run pri 1500 > /tmp/v_pri.out 2>&1 &
F=150 bb_run vel 1500 --set rigidity_weight=0 rotation_weight=0 > /tmp/v_vel.out 2>&1 &
F=150 bb_run none 1500 --set rigidity_weight=0 rotation_weight=0 constant_velocity=false > /tmp/v_none.out 2>&1 &
wait
for n in pri vel none; do tail -n 160 /tmp/v_$n.out | grep -E "^\||rc="
  python3 benchmarks/delta_sizes.py /tmp/v/$n/train -o /tmp/v/$n/delta_sizes.json
  cp /tmp/v/$n/summary.json $OUT/summary_$n.json; cp /tmp/v/$n/delta_sizes.json $OUT/delta_$n.json; done
cp /tmp/v/pri/heldout.mp4 $OUT/heldout_pri.mp4
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
