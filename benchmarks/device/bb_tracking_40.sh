# Issue 7: do moving people and the ball get followed? 40 basketball frames from ONE frame 0, four continuations
# side by side on the GPU (per-frame times are upper bounds), scored by the held-out camera's moving-pixel PSNR
# and the training views' final loss: defaults; centres/rotations at 4x the learning rate with a constant-velocity
# start; + opacity (a splat that lost its object may fade); + every non-frozen Gaussian active every frame.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_tracking_40.sh; bash benchmarks/device/bb_bg.sh poll 560
source benchmarks/device/lib_bb.sh; bb_setup
F=40 bb_run base 400 --set max_frames=1
for n in d lr4 op opall; do bb_from_frame0 $n base; done
LR4="lr_means=6.4e-4 lr_quats=4e-3 constant_velocity=true"
F=40 bb_run d 1200 > /tmp/v_d.out 2>&1 &
F=40 bb_run lr4 1200 --set $LR4 > /tmp/v_lr4.out 2>&1 &
F=40 bb_run op 1200 --set $LR4 frame_params=motion+opacity > /tmp/v_op.out 2>&1 &
F=40 bb_run opall 1200 --set $LR4 frame_params=motion+opacity active_set=all > /tmp/v_opall.out 2>&1 &
wait
for n in d lr4 op opall; do echo "== $n"; grep -E "^\||rc=" /tmp/v_$n.out | tail -2; cp /tmp/v/$n/heldout.mp4 /tmp/v/heldout_$n.mp4
  python3 -c "import json; e=json.load(open('/tmp/v/$n/summary.json'))['eval']; print('psnr_dynamic', [round(x,2) for x in e['psnr_dynamic'][::5]], 'psnr_static', [round(x,2) for x in e['psnr_static'][::5]])"
done
tar czf $OUT/tracking40.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl /tmp/v/*/summary.json /tmp/v/heldout_*.mp4 2>/dev/null
ls -la $OUT; date -u
