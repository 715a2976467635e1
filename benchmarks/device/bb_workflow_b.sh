# Issue 8 workflow B on basketball: frame 0's static model -> all_depth.npy -> two continuations from the SAME
# frame 0 (frames 1-15), without and with --depth distill. Held-out static-pixel PSNR and flicker compared.
source benchmarks/device/lib_bb.sh; bb_setup
F=16 bb_run b0 150 --set max_frames=1
timeout 60 python3 -m splatworks depth export /tmp/v/b0/train/frame0_static /tmp/v/b0/dataset -o /tmp/v/depth0.npy 2>&1 | tail -1
for n in none distill; do
  extra=""; [ $n = distill ] && extra="depth=distill depth_file=/tmp/v/depth0.npy"
  bb_share $n b0 && cp -r /tmp/v/b0/train /tmp/v/$n/train
  F=16 bb_run $n 170 --set max_frames=0 $extra
done
cp /tmp/v/none/summary.json $OUT/summary_none.json; cp /tmp/v/distill/summary.json $OUT/summary_distill.json
cp /tmp/v/distill/heldout.mp4 $OUT/heldout_distill.mp4; cp /tmp/v/none/heldout.mp4 $OUT/heldout_none.mp4
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/train/metrics.jsonl /tmp/v/depth0.json 2>/dev/null; date -u
