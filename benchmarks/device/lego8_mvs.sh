# Issue 8 workflow A on lego-8 (device): the sparse-depth loss fed by multi-view-stereo samples at the exact poses
# (`depth_lego8.py dense` on the CPU wrote .device/lego8b/mvs1 and mvs2: the plane sweep's pixels that >= 1 or >= 2
# other views agree on) against the triangulated points' samples and no depth; same start, seed and budget.
# Needs .device/lego8b (prepare + dense), .device/lw (plyfile wheel), .device/gsw (+ .device/bb2).
#   BG=lego bash benchmarks/device/bb_bg.sh start benchmarks/device/lego8_mvs.sh 10
source benchmarks/device/lib_bb.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_lego .device/lw/*.whl || exit 1
export SITE=/tmp/site_lego PYTHONPATH=/tmp/site_lego:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
bb_gsplat || exit 1
date -u
python3 benchmarks/depth_lego8.py train --scene .device/lego8b --out $OUT/depth_lego8_mvs.json --time-budget 480 \
  --variants "${LEGO_VARIANTS:-none,termination:2:0.2,termination:2:0.2~mvs2,termination:2:0.2~mvs1,termination:0.5:0.05~mvs1,termination:2:0.2:0.3~mvs1,expected:0.2:0.02~mvs1,none@sh1}" \
  2>&1 | grep -vE "^\s*[0-9]+%|it/s" | tail -40
date -u
