# Issue 7, frame 0 from dense MVS points: 5 frames (1 view per step), then 4 views per step from the same frame 0,
# SH degree 1, and MVS depth distilled into frame 0.
source benchmarks/device/lib_bb.sh; bb_setup
F=5
bb_run mvs 230 --dense on --set views_per_step=1
bb_from_frame0 mvs_vps4 mvs; bb_run mvs_vps4 100 --set views_per_step=4
bb_share mvs_sh1 mvs; bb_run mvs_sh1 100 --set sh_degree=1 max_frames=2 views_per_step=1
python3 - <<'PY'
import json, numpy as np
from splatworks.depth.files import write_all_depth
root = "/tmp/v/mvs/dataset/calibration/dense_depth"
d = np.load(root + ".npy"); cams = json.load(open(root + ".json"))["cameras"]
maps = {c["name"].split("/")[0]: np.kron(d[i], np.ones((2, 2), np.float32)) for i, c in enumerate(cams)}  # half res
write_all_depth("/tmp/v/mvs_depth.npy", maps)
PY
bb_share mvs_distill mvs; bb_run mvs_distill 100 --set depth=distill depth_file=/tmp/v/mvs_depth.npy max_frames=2
cd /tmp/v && for n in mvs mvs_vps4 mvs_sh1 mvs_distill; do cp $n/heldout.mp4 $OUT/heldout_$n.mp4 2>/dev/null; done
tar czf $OUT/logs.tgz /tmp/v_*.log /tmp/v/*/summary.json /tmp/v/*/train/metrics.jsonl 2>/dev/null; date -u
