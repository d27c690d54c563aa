"""Metrics: reconstruction (consistency, L1, identity), sufficiency@K of AttFind attributes; ground truth later."""
