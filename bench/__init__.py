"""Benchmarks that print measured ratios side by side in one run."""
