"""`python -m dynexport` → the CLI."""

from .cli import main

main()
