# Issues 7 + 10 acceptance: all 150 basketball frames through the service API on one H100, default settings.
# Starts the run in its own session (it outlives this call) and follows it; bb_service_poll.sh follows it later.
source benchmarks/device/lib_bb.sh; bb_setup
rm -rf /tmp/bbsvc; date +%s > /tmp/t0
setsid nohup python3 benchmarks/dynamic_service_basketball.py --data /tmp/bbp -o /tmp/bbsvc --timeout 1480 \
  > /tmp/bb.log 2>&1 < /dev/null &
sleep ${FIRST_WAIT:-510}
bash benchmarks/device/bb_service_poll.sh 0
