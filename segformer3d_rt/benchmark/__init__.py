"""Benchmarks: :mod:`.model_only` (the network alone, every size x batch x precision x mode)."""
