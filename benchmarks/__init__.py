"""regfw's benchmarks, run by hand: `python -m benchmarks` (see README.md, "Benchmarks")."""
