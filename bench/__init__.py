"""Benchmarks: chatledger against hand-written asyncpg and its peers, side by side in one run.

Run with `make bench` (everything) or `make bench-quick` (append at 8 writers, reads at 10 000 messages).
Every target is a ratio between commands measured in the same run, alternating, median of repetitions.
"""
