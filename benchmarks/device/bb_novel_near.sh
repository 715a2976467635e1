# Issue 7, the held-out fog: three independent frame 0s, each continued to frame 19, with the default
# novel_view_near (held-out renders clipped at 0.8 x that camera's near bound from the frame-0 points); each run
# also prints its frame-0 near-plane probe and the same models scored with novel_view_near off.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_novel_near.sh 330
source benchmarks/device/lib_bb.sh; bb_setup
python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/a --frames 20 --prepare-only > /tmp/v_prep.log 2>&1
tail -2 /tmp/v_prep.log
for n in b c; do bb_share $n a; done
for n in a b c; do F=20 bb_run $n 330 > /tmp/v_$n.out 2>&1 & done
wait
for n in a b c; do echo "== $n"; grep -E "^\||near-plane probe|without novel|rc=" /tmp/v_$n.out /tmp/v_$n.log | tail -4
  cp /tmp/v/$n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/novel_near.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null
ls -la $OUT; date -u
