"""Benchmarks of stdiff, installed with the package so that ``stdiff bench`` works anywhere.

Modules: :mod:`~stdiff.bench.common` (CSV rows, timing, copy bandwidth, peak memory),
:mod:`~stdiff.bench.sde` (whole motion-SDE solve vs torchsde), :mod:`~stdiff.bench.predict`
(``Predictor.predict`` speed, memory, time shares, TFLOP/s) and :mod:`~stdiff.bench.report`
(CSV -> Markdown + PNG charts) and :mod:`~stdiff.bench.options` (their command-line options,
without importing torch). ``benchmarks/*.py`` in a source checkout are thin wrappers.
"""
