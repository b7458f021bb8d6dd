"""OneMap's performance suite (not part of the ``onemap`` package; run from the repo root).

Results are printed and written to ``benchmarks/results/``; tests only check that the
suite runs and that its answers agree with the baselines, never timings.
"""
