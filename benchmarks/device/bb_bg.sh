# Run a device script in its own session so it outlives this call (10-minute cap): results go to /tmp/${BG}out,
# and bb_bg.sh poll SECONDS (in the next call, within the machine's 30 s warm window) waits and copies them to $OUT.
#   bash benchmarks/device/bb_bg.sh start SCRIPT [FIRST_WAIT]      bash benchmarks/device/bb_bg.sh poll SECONDS
# BG=NAME (default bg) names the slot, so two scripts can run side by side (e.g. one started in a call that carried
# the lego folder, one in the next call that carried the basketball videos: carried folders stay on a warm machine).
B=/tmp/${BG:-bg}
case $1 in
  start) rm -rf ${B}out ${B}out.FINISHED; mkdir -p ${B}out; date +%s > ${B}_t0
    OUT=${B}out setsid nohup bash -c "bash $2; touch ${B}out.FINISHED" > ${B}.log 2>&1 < /dev/null &
    W=${3:-540} ;;
  poll) W=${2:-0} ;;
esac
t=0; while [ $t -lt $W ] && [ ! -f ${B}out.FINISHED ]; do sleep 5; t=$((t+5)); done
echo "[${BG:-bg}] elapsed $(( $(date +%s) - $(cat ${B}_t0) )) s"; tail -n 40 ${B}.log
if [ -f ${B}out.FINISHED ]; then mkdir -p $OUT/${BG:-bg}; cp -r ${B}out/. $OUT/${BG:-bg}/; echo "FINISHED ${BG:-bg}"
else  # so far: per-frame metrics and logs (small), in case the lease ends before the script does
  mkdir -p $OUT/${BG:-bg}; tar czf $OUT/${BG:-bg}/partial.tgz ${B}.log /tmp/v_*.log /tmp/v/*/train/metrics.jsonl 2>/dev/null; fi
