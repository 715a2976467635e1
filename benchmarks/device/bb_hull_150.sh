# Issue 7, following the moving people (session 8, revised in session 9; not run yet): 150 basketball frames from ONE frame 0, continued
# three times side by side on the GPU (per-frame times are upper bounds of a run alone):
#   d     = every default;
#   hull  = + --respawn with respawn_points=hull and respawn_carve (rows left outside the visual hull of the frame's
#           masks fade at once; they and the faded rows may be recycled into hull voxels on uncovered moving pixels);
#   hullc = hull, with carving only where a row's own colour differs from the static pixels it lands on
#           (respawn_carve_colour=0.1): the court under the players' path is not carved (session 9; on the CPU rig
#           the hull alone barely helped, so it is not an arm any more).
# The GPU tests (test_respawn's CUDA/CPU hull check included) run beside frame 0. Then each run's export sizes,
# held-out video, per-frame moving/static PSNR and respawn counts. Three runs sharing the GPU take about 15 minutes
# after frame 0: one start call and one or two polls.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_hull_150.sh 570; bash benchmarks/device/bb_bg.sh poll 560
source benchmarks/device/lib_bb.sh; bb_setup
timeout 400 python3 -m pytest tests/test_sequential.py tests/test_depth.py tests/test_splat_parity.py \
  tests/test_respawn.py -m gpu -q -p no:cacheprovider -rs > $OUT/gpu_tests.txt 2>&1 &
F=150 bb_run base 900 --set max_frames=1
wait; tail -3 $OUT/gpu_tests.txt
for n in d hull hullc; do bb_from_frame0 $n base; done
F=150 bb_run d 1700 > /tmp/v_d.out 2>&1 &
F=150 bb_run hull 1700 --set respawn=true respawn_points=hull respawn_carve=true respawn_dilation=2 > /tmp/v_hull.out 2>&1 &
F=150 bb_run hullc 1700 --set respawn=true respawn_points=hull respawn_carve=true respawn_dilation=2 \
  respawn_carve_colour=0.1 > /tmp/v_hullc.out 2>&1 &
wait
for n in d hull hullc; do echo "== $n"; grep -E "^\||rc=" /tmp/v_$n.out | tail -2
  cp /tmp/v/$n/heldout.mp4 $OUT/heldout_$n.mp4; cp /tmp/v/$n/summary.json /tmp/v/summary_$n.json
  python3 benchmarks/delta_sizes.py /tmp/v/$n/train -o /tmp/v/delta_$n.json | tail -4
  python3 -c "import json; e=json.load(open('/tmp/v/$n/summary.json'))['eval']; print('psnr_dynamic', [round(x,2) for x in e['psnr_dynamic'][::10]], 'psnr_static', [round(x,2) for x in e['psnr_static'][::10]])"
done
python3 - <<'PY'
import json
for run in ("hull", "hullc"):
    for line in open(f"/tmp/v/{run}/train/metrics.jsonl"):
        m = json.loads(line)
        if m["frame"] % 10 == 1:
            print(run, m["frame"], m.get("seconds"), {k: v for k, v in m.items() if k.startswith("respawn_")})
PY
tar czf $OUT/hull150.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl /tmp/v/summary_*.json \
  /tmp/v/delta_*.json 2>/dev/null
ls -la $OUT; date -u
