# Issue 8 workflow B on basketball: frame 0's static model -> all_depth.npy -> two continuations from the SAME
# frame 0 (frames 1-15), without and with --depth distill. Held-out static-pixel PSNR and flicker compared.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/bbsvc/whl/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import av; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
mkdir -p /tmp/bbp && cp -r .device/bbsvc/bb/videos /tmp/bbp/ && cp .device/bbpts/calibration.json /tmp/bbp/
date -u
timeout 150 python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/b0 --frames 16 --set max_frames=1 > /tmp/v_b0.log 2>&1; echo "b0 rc=$?"; grep -E "^\|" /tmp/v_b0.log | tail -1
timeout 60 python3 -m splatworks depth export /tmp/v/b0/train/frame0_static /tmp/v/b0/dataset -o /tmp/v/depth0.npy 2>&1 | tail -2
for n in none distill; do
  mkdir -p /tmp/v/$n && ln -s /tmp/v/b0/dataset /tmp/v/$n/dataset && cp -r /tmp/v/b0/train /tmp/v/$n/train
  extra=""; [ $n = distill ] && extra="depth=distill depth_file=/tmp/v/depth0.npy"
  date -u +"%T $n"
  timeout 170 python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/$n --frames 16 --set max_frames=0 $extra > /tmp/v_$n.log 2>&1
  echo "$n rc=$?"; grep -E "^\|" /tmp/v_$n.log | tail -1; grep -iE "Traceback|Error" /tmp/v_$n.log | tail -2
done
cp /tmp/v/none/summary.json $OUT/summary_none.json; cp /tmp/v/distill/summary.json $OUT/summary_distill.json
cp /tmp/v/distill/heldout.mp4 $OUT/heldout_distill.mp4; cp /tmp/v/none/heldout.mp4 $OUT/heldout_none.mp4
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/train/metrics.jsonl /tmp/v/depth0.json 2>/dev/null; date -u
