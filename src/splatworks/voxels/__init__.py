"""MixVoxels-style mixed static/dynamic voxel backend."""
