# Issue 8: lego-8 depth sweep (none vs expected vs termination), gsplat-vs-torch check of the termination moments.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/lw/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import plyfile; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
date -u
timeout 60 python3 benchmarks/depth_lego8.py check --scene .device/lego8b 2>&1 | grep -v -i warn | tail -2
timeout 420 python3 benchmarks/depth_lego8.py train --scene .device/lego8b --out $OUT/depth_lego8_sweep.json --work /tmp/d8 --time-budget 270 2>&1 | grep -v -i warn | tail -22
date -u
