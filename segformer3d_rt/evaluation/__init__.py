"""Evaluation: :mod:`.evaluate` (evaluate a checkpoint on a dataset) and :mod:`.metrics`."""
