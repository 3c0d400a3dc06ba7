"""`python -m zmesh ...` is the `zmesh` command."""

# `cli/` is installed as `zmesh.cli` (see pyproject's package-dir); mypy checks it as `cli`.
from zmesh.cli.app import main  # type: ignore[import-not-found,unused-ignore]

main()
