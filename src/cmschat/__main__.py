"""``python -m cmschat`` runs the CLI."""

from cmschat.cli import main

main()
