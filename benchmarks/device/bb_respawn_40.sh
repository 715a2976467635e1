# Issue 7: does --respawn bring back the fast movers (ball, player near a camera)? 40 basketball frames from ONE
# frame 0, three continuations side by side on the GPU (per-frame times are upper bounds): defaults, respawn with
# its default dead-opacity threshold (0.05) and respawn at 0.3; the GPU tests run beside them.
# Scored by the held-out camera's moving-pixel PSNR per frame and the respawn counts in metrics.jsonl.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_respawn_40.sh; bash benchmarks/device/bb_bg.sh poll 560
source benchmarks/device/lib_bb.sh; bb_setup
F=40 bb_run base 400 --set max_frames=1
for n in d rsp rsp3; do bb_from_frame0 $n base; done
F=40 bb_run d 1200 > /tmp/v_d.out 2>&1 &
F=40 bb_run rsp 1200 --set respawn=true > /tmp/v_rsp.out 2>&1 &
F=40 bb_run rsp3 1200 --set respawn=true respawn_max_opacity=0.3 > /tmp/v_rsp3.out 2>&1 &
timeout 400 python3 -m pytest tests/test_sequential.py tests/test_depth.py tests/test_splat_parity.py \
  -m gpu -q -p no:cacheprovider -rs > $OUT/gpu_tests.txt 2>&1
tail -5 $OUT/gpu_tests.txt
wait
for n in d rsp rsp3; do echo "== $n"; grep -E "^\||rc=" /tmp/v_$n.out | tail -2; cp /tmp/v/$n/heldout.mp4 /tmp/v/heldout_$n.mp4
  python3 -c "import json; e=json.load(open('/tmp/v/$n/summary.json'))['eval']; print('psnr_dynamic', [round(x,2) for x in e['psnr_dynamic'][::5]], 'psnr_static', [round(x,2) for x in e['psnr_static'][::5]])"
done
for n in rsp rsp3; do python3 - $n <<'PY'
import json, sys
for line in open(f"/tmp/v/{sys.argv[1]}/train/metrics.jsonl"):
    m = json.loads(line)
    if m["frame"] % 5 == 1:
        print(sys.argv[1], m["frame"], m.get("seconds"), {k: v for k, v in m.items() if k.startswith("respawn_")})
PY
done
tar czf $OUT/respawn40.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl /tmp/v/*/summary.json /tmp/v/heldout_*.mp4 2>/dev/null
ls -la $OUT; date -u
