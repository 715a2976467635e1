"""Depth supervision shared by all trainers: sparse SfM depth and distilled static-model depth."""
