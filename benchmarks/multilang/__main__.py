"""``python -m benchmarks.multilang``: see benchmarks/multilang/__init__.py."""

from . import main

main()
