"""`python -m aimfair_cli ...` runs the CLI (also `torchrun -m aimfair_cli ...`)."""

from .cli.app import main

main()
