"""`python -m analyzer.cli` runs `analyze`."""

from analyzer.cli import main

main()
