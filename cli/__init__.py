"""The `zmesh` command line (installed as `zmesh.cli`); imports only zmesh's public API."""
