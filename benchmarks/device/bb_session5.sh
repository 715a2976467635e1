# Issue 7 + 8 in one machine lease (about 23 minutes; run it through bb_bg.sh and poll twice): the 150-frame
# default run alone (bb_default_150.sh: SWD2 sizes, GPU tests), then workflow B with the clean plate under the same
# defaults (bb_workflow_b_plate.sh). Everything comes back as one archive, s5.tgz (o1/ and o2/).
#   bash benchmarks/device/bb_bg.sh start benchmarks/device/bb_session5.sh; bash benchmarks/device/bb_bg.sh poll 590
mkdir -p /tmp/o1 /tmp/o2
OUT=/tmp/o1 bash benchmarks/device/bb_default_150.sh
tar czf $OUT/s5.tgz -C /tmp o1
OUT=/tmp/o2 bash benchmarks/device/bb_workflow_b_plate.sh
tar czf $OUT/s5.tgz -C /tmp o1 o2; ls -la $OUT
