"""Benchmarks of what a scheduler costs per step, in isolation and inside a real fit.

``flashdist bench schedulers`` (:mod:`flashdist.bench.schedulers`) and ``flashdist bench fit``
(:mod:`flashdist.bench.fit`). Both warm up before timing, interleave what they compare,
report medians with their spread, and measure their baseline in the same run.
"""
