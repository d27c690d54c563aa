"""Metrics: reconstruction (consistency, L1, identity), sufficiency@K of AttFind attributes, and ground truth on
synthetic shapes (`oracle`: factors read from pictures; `groundtruth`: true importance, attribute readings, precision /
coverage / purity / rank correlation; `evaluate`: all of it for `stylex evaluate`)."""
