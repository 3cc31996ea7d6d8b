"""Cohorts in, prepared datasets out: the record schema, the phantom and the real-cohort loaders."""

# The table of a prepared dataset's records, real or synthetic: `cardiofair prepare` and
# `cardiofair generate` write it, `cardiofair split` adds its split column. Declared here, where
# importing it loads no pandas, so that a study file is checked before pandas loads.
MANIFEST = "manifest.csv"
# Beside it: each excluded subject with its file and reason, and the settings (and warnings)
# that made the dataset, which `cardiofair fairness` reads back to draw the phantom's oracle.
EXCLUDED = "excluded.csv"
PREPARATION = "prepare.json"
