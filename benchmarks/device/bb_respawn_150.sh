# Issue 7 acceptance + respawn, one lease: all 150 basketball frames from ONE frame 0, continued twice side by side
# on the GPU (so the per-frame times are upper bounds of a run alone): 'd' = every default, 'rsp' = defaults +
# --respawn (faded dynamic rows recycled onto uncovered moving pixels). The GPU tests run beside frame 0. Then the
# 4D export's per-frame sizes of both runs (benchmarks/delta_sizes.py), their held-out videos and metrics.
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_respawn_150.sh 570; bash benchmarks/device/bb_bg.sh poll 560
source benchmarks/device/lib_bb.sh; bb_setup
timeout 400 python3 -m pytest tests/test_sequential.py tests/test_depth.py tests/test_splat_parity.py \
  -m gpu -q -p no:cacheprovider -rs > $OUT/gpu_tests.txt 2>&1 &
F=150 bb_run base 900 --set max_frames=1
wait; tail -3 $OUT/gpu_tests.txt
for n in d rsp; do bb_from_frame0 $n base; done
F=150 bb_run d 1500 > /tmp/v_d.out 2>&1 &
F=150 bb_run rsp 1500 --set respawn=true > /tmp/v_rsp.out 2>&1 &
wait
for n in d rsp; do echo "== $n"; grep -E "^\||rc=" /tmp/v_$n.out | tail -2
  cp /tmp/v/$n/heldout.mp4 $OUT/heldout_$n.mp4; cp /tmp/v/$n/summary.json /tmp/v/summary_$n.json
  python3 benchmarks/delta_sizes.py /tmp/v/$n/train -o /tmp/v/delta_$n.json | tail -4
  python3 -c "import json; e=json.load(open('/tmp/v/$n/summary.json'))['eval']; print('psnr_dynamic', [round(x,2) for x in e['psnr_dynamic'][::10]], 'psnr_static', [round(x,2) for x in e['psnr_static'][::10]])"
done
python3 - <<'PY'
import json
for line in open("/tmp/v/rsp/train/metrics.jsonl"):
    m = json.loads(line)
    if m["frame"] % 10 == 1:
        print("rsp", m["frame"], m.get("seconds"), {k: v for k, v in m.items() if k.startswith("respawn_")})
PY
tar czf $OUT/respawn150.tgz /tmp/v_*.log /tmp/v_*.out /tmp/v/*/train/metrics.jsonl /tmp/v/summary_*.json \
  /tmp/v/delta_*.json 2>/dev/null
ls -la $OUT; date -u
