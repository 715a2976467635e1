# Follow bb_motion_150.sh: wait up to $1 s (returns early when finished), print progress, copy results.
W=${1:-0}; t=0
while [ $t -lt $W ] && [ ! -f /tmp/v/FINISHED ]; do sleep 10; t=$((t+10)); done
echo "elapsed $(( $(date +%s) - $(cat /tmp/t0) )) s"; tail -n 3 /tmp/v/go.log
for n in mact mall; do grep -E "^frame" /tmp/v_$n.log 2>/dev/null | tail -n 1; done
if [ -f /tmp/v/FINISHED ]; then
  for n in mact mall; do cp /tmp/v/$n/summary.json $OUT/summary_$n.json; cp /tmp/v/$n/heldout.mp4 $OUT/heldout_$n.mp4
    cp /tmp/v/$n/delta_sizes.json $OUT/delta_$n.json; done
  tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/train/metrics.jsonl /tmp/v/go.log 2>/dev/null
fi
date -u
