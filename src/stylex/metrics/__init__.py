"""Metrics: reconstruction (consistency, L1, identity); sufficiency and ground truth come later."""
