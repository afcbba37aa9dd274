"""Independent reference implementations used as ground truth by tests and benchmarks."""
