"""``python -m streamgale.cli``: the same as the ``streamgale`` console script."""

from .main import main

main()
