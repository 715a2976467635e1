"""Multi-view video: frame extraction, rig calibration, masks, sequential 4D training, 4D export."""
