"""StreamGale benchmarks: `python -m benchmarks` (see benchmarks/suite.py)."""
