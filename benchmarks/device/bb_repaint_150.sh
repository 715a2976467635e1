# Issue 7: can repainting follow what motion cannot? All 150 basketball frames from ONE frame 0, two continuations
# side by side on the GPU (per-frame times are upper bounds): the defaults (frame_params=motion+opacity) and
# frame_params=motion+opacity+colour (colour too, sizes still frame 0's). Scored by moving-pixel PSNR and flicker.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_repaint_150.sh; bash benchmarks/device/bb_bg.sh poll 590
source benchmarks/device/lib_bb.sh; bb_setup
F=150 bb_run base 400 --set max_frames=1
for n in op opc; do bb_from_frame0 $n base; done
F=150 bb_run op 1500 > /tmp/v_op.out 2>&1 &
F=150 bb_run opc 1500 --set frame_params=motion+opacity+colour > /tmp/v_opc.out 2>&1 &
wait
for n in op opc; do echo "== $n"; grep -E "^\||rc=" /tmp/v_$n.out | tail -2; cp /tmp/v/$n/heldout.mp4 /tmp/v/heldout_$n.mp4
  python3 benchmarks/delta_sizes.py /tmp/v/$n/train -o /tmp/v/$n/delta_sizes.json | head -1; done
tar czf $OUT/repaint150.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl /tmp/v/*/summary.json \
  /tmp/v/*/delta_sizes.json /tmp/v/heldout_*.mp4 2>/dev/null; ls -la $OUT; date -u
