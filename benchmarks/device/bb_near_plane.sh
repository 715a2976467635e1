# Issue 7/8, frame 0's held-out fog: is it splats right in front of the held-out camera? (not run yet)
# Frame 0 only (a 2-frame dataset), each run printing its near-plane probe (held-out PSNR of frame 0 rendered at
# near planes of 0.01 units and 0.05-0.3 scene radii): the defaults twice (frame 0's run-to-run spread), then frame 0
# TRAINED with near_plane 0.1 and 0.2 scene radii (three runs side by side on the GPU).
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_near_plane.sh 570
source benchmarks/device/lib_bb.sh; bb_setup
timeout 400 python3 -m pytest tests/test_sequential.py tests/test_depth.py tests/test_splat_parity.py \
  -m gpu -q -p no:cacheprovider -rs > $OUT/gpu_tests.txt 2>&1 &
F=2 bb_run p0 400 --set max_frames=1
for n in p1 n1 n2; do bb_share $n p0; done
F=2 bb_run p1 400 --set max_frames=1 > /tmp/v_p1.out 2>&1 &
F=2 bb_run n1 400 --set max_frames=1 near_plane=0.1 > /tmp/v_n1.out 2>&1 &
F=2 bb_run n2 400 --set max_frames=1 near_plane=0.2 > /tmp/v_n2.out 2>&1 &
wait; tail -3 $OUT/gpu_tests.txt
for n in p0 p1 n1 n2; do echo "== $n"; grep -E "^\||near-plane probe" /tmp/v_$n.log | tail -2
  cp /tmp/v/$n/heldout.mp4 $OUT/heldout_f0_$n.mp4 2>/dev/null; done
tar czf $OUT/near_plane.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null
ls -la $OUT; date -u
