"""The command-line layer: the only package that imports typer. Each command lives in its own module."""
