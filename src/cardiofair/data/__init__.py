"""Cohorts in, prepared datasets out: the record schema, the phantom and the real-cohort loaders."""
