"""Benchmark harness shared by scripts/bench_*.py: machine facts and the interleaved causal-LM runs."""
