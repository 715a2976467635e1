# Run a device script in its own session so it outlives this call (10-minute cap): results go to /tmp/bgout,
# and bb_bg.sh poll SECONDS (in the next call, within the machine's 30 s warm window) waits and copies them to $OUT.
#   bash benchmarks/device/bb_bg.sh start SCRIPT [FIRST_WAIT]      bash benchmarks/device/bb_bg.sh poll SECONDS
case $1 in
  start) rm -rf /tmp/bgout; mkdir -p /tmp/bgout; date +%s > /tmp/bg_t0
    OUT=/tmp/bgout setsid nohup bash -c "bash $2; touch /tmp/bgout.FINISHED" > /tmp/bg.log 2>&1 < /dev/null &
    W=${3:-540} ;;
  poll) W=${2:-0} ;;
esac
t=0; while [ $t -lt $W ] && [ ! -f /tmp/bgout.FINISHED ]; do sleep 5; t=$((t+5)); done
echo "elapsed $(( $(date +%s) - $(cat /tmp/bg_t0) )) s"; tail -n 40 /tmp/bg.log
if [ -f /tmp/bgout.FINISHED ]; then cp -r /tmp/bgout/. $OUT/; echo FINISHED; fi
