# Issue 7: free-space carving weights on frame 0 (dense points) and 4 vs 2 views per step on frames 1-4.
source benchmarks/device/lib_bb.sh; bb_setup
F=5
bb_run fs01 230 --dense on --set views_per_step=4 free_space_weight=0.1
bb_share fs1 fs01; bb_run fs1 110 --set free_space_weight=1.0 max_frames=1
bb_share fs01m1 fs01; bb_run fs01m1 110 --set free_space_weight=0.1 free_space_min_views=1 max_frames=1
bb_from_frame0 vps2 fs01; bb_run vps2 100 --set views_per_step=2 free_space_weight=0.1
cd /tmp/v && for n in fs01 fs1 fs01m1; do cp $n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
