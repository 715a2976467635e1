# Follow the 150-frame run: wait up to $1 s (returns early when FINISHED exists), print progress, copy results.
W=${1:-0}; t=0
while [ $t -lt $W ] && [ ! -f /tmp/bbsvc/FINISHED ]; do sleep 10; t=$((t+10)); done
echo "elapsed $(( $(date +%s) - $(cat /tmp/t0) )) s"; tail -n 4 /tmp/bbsvc/progress.log 2>/dev/null; tail -n 3 /tmp/bb.log
J=$(ls -d /tmp/bbsvc/data/jobs/*/ 2>/dev/null | tail -1)
[ -n "$J" ] && tail -n 2 $J/train/metrics.jsonl 2>/dev/null | cut -c1-300 && cp $J/train/metrics.jsonl $OUT/ 2>/dev/null
cp /tmp/bbsvc/progress.log /tmp/bb.log $OUT/ 2>/dev/null
if [ -f /tmp/bbsvc/FINISHED ]; then
  cp /tmp/bbsvc/bb_result.tar.gz /tmp/bbsvc/summary.json /tmp/bbsvc/bench.md $OUT/ 2>/dev/null; cat /tmp/bbsvc/bench.md | tail -8
  python3 -c "import json; s=json.load(open('/tmp/bbsvc/summary.json')); print({k: s.get(k) for k in ('status','job_s','later_frames','heldout','export_bytes','issue7_checks','frame0')})"
fi
date -u
