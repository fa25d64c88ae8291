"""Side-by-side measurements (not timed tests). Run ``python -m benchmarks.<name>``."""
