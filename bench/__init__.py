"""Benchmarks of the analyzer against human annotations and the libraries it builds on.

Run ``python -m bench.run --help``; see bench/README.md.
"""
