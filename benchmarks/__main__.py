"""`python -m benchmarks [--quick] [--only NAME ...]`: runs the benchmarks (see run.py)."""

from benchmarks.run import main

if __name__ == "__main__":
    main()
