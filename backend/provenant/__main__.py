"""`python -m provenant ...`: the CLI, also for launchers that run a module (`torchrun -m provenant train ...`)."""

from provenant.cli import main

main()
