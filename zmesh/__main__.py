"""`python -m zmesh ...` is the `zmesh` command."""

from zmesh.cli.app import main

main()
