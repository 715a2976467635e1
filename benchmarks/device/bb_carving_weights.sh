# Issue 7: frame 0 only, free-space carving weight 1 / 3 / 10 and min_views 1.
source benchmarks/device/lib_bb.sh; bb_setup
F=5
bb_run w1 120 --dense on --set free_space_weight=1.0 max_frames=1
bb_share w3 w1; bb_run w3 90 --set free_space_weight=3.0 max_frames=1
bb_share w10 w1; bb_run w10 90 --set free_space_weight=10.0 max_frames=1
bb_share w3m1 w1; bb_run w3m1 90 --set free_space_weight=3.0 free_space_min_views=1 max_frames=1
cd /tmp/v && for n in w1 w3 w10 w3m1; do cp $n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
