"""batchpump benchmarks: standalone ``bench_*.py`` scripts sharing one data generator.

They are kept out of the default test paths; run one with ``python benchmarks/bench_shard.py``.
"""
