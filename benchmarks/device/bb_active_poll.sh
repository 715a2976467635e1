# Follow bb_active_150.sh's run: wait up to $1 s (returns early when it finished), print progress, copy results.
W=${1:-0}; t=0
while [ $t -lt $W ] && [ ! -f /tmp/v/FINISHED ]; do sleep 10; t=$((t+10)); done
echo "elapsed $(( $(date +%s) - $(cat /tmp/t0) )) s"; grep -E "^frame|Error|Traceback" /tmp/v_a150.log | tail -n 4
cp /tmp/v/a150/train/metrics.jsonl /tmp/v_a150.log $OUT/ 2>/dev/null
if [ -f /tmp/v/FINISHED ]; then
  cd /tmp/v/a150 && cp summary.json heldout.mp4 delta_sizes.json $OUT/ 2>/dev/null; tail -n 3 /tmp/v_a150.log
fi
date -u
