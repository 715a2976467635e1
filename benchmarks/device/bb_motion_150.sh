# Issue 7: all 150 basketball frames from ONE frame 0, two continuations side by side on the GPU (so their
# per-frame times are upper bounds): frame_params=motion (the default: centres and rotations only) with the
# per-frame active set (default), and with active_set=all. bb_motion_poll.sh follows them in later calls.
source benchmarks/device/lib_bb.sh; bb_setup
rm -rf /tmp/v; mkdir -p /tmp/v; date +%s > /tmp/t0
cat > /tmp/v/go.sh <<'SH'
F=150 bb_run base 400 --set max_frames=1
for n in mact mall; do bb_from_frame0 $n base; done
F=150 bb_run mact 1500 & F=150 bb_run mall 1500 --set active_set=all & wait
for n in mact mall; do python3 benchmarks/delta_sizes.py /tmp/v/$n/train -o /tmp/v/$n/delta_sizes.json; done
touch /tmp/v/FINISHED
SH
setsid nohup bash -c "source benchmarks/device/lib_bb.sh; export GSPLAT_SO PYTHONPATH TORCH_CUDA_ARCH_LIST MAX_JOBS PYTHONUNBUFFERED; source /tmp/v/go.sh" > /tmp/v/go.log 2>&1 < /dev/null &
sleep ${FIRST_WAIT:-540}
bash benchmarks/device/bb_motion_poll.sh 0
