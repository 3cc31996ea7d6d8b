"""Is the synthetic data any good? Evaluators trained on real data, and the figures they give."""
