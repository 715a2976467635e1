# Issue 7 acceptance: all 150 basketball frames with the default settings (per-frame active set, footprint
# windows), benchmarks/dynamic_basketball.py; then the delta-export size per frame (benchmarks/delta_sizes.py).
# Starts the run in its own session (it outlives this call) and follows it; bb_active_poll.sh follows it later.
source benchmarks/device/lib_bb.sh; bb_setup
rm -rf /tmp/v; mkdir -p /tmp/v; date +%s > /tmp/t0
setsid nohup bash -c "python3 benchmarks/dynamic_basketball.py --data /tmp/bbp -o /tmp/v/a150 --frames 150 \
  > /tmp/v_a150.log 2>&1; python3 benchmarks/delta_sizes.py /tmp/v/a150/train -o /tmp/v/a150/delta_sizes.json \
  >> /tmp/v_a150.log 2>&1; touch /tmp/v/FINISHED" > /dev/null 2>&1 < /dev/null &
sleep ${FIRST_WAIT:-540}
bash benchmarks/device/bb_active_poll.sh 0
