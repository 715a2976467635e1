"""Synthetic test scenes the project generates itself (known poses, depth and masks)."""
