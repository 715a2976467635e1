# Issue 7 + 10 acceptance: all 150 basketball frames through the service API on one H100, default settings.
# Starts the run in its own session (it outlives this call) and follows it; poll.sh follows it in later calls.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/bbsvc/whl/*.whl || exit 1
cp -r .device/bb2/gslim/gsplat /tmp/site/ && xz -d -c .device/bb2/gsplat_cuda.so.xz > /tmp/gsplat_cuda.so
export GSPLAT_SO=/tmp/gsplat_cuda.so PYTHONPATH=/tmp/site:$PWD/src TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
python3 -c "import av, fastapi; from gsplat.cuda._backend import _C; assert _C is not None; print('env ok')" || exit 1
rm -rf /tmp/bbdata /tmp/bbsvc && mkdir -p /tmp/bbdata && cp -r .device/bbsvc/bb/videos /tmp/bbdata/ && cp .device/bbpts/calibration.json /tmp/bbdata/
date -u +"%T start"; date +%s > /tmp/t0
setsid nohup python3 benchmarks/dynamic_service_basketball.py --data /tmp/bbdata -o /tmp/bbsvc --timeout 1480 > /tmp/bb.log 2>&1 < /dev/null &
sleep ${FIRST_WAIT:-540}
bash benchmarks/device/bb_service_poll.sh 0
