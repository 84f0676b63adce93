"""The ``mmdtok`` command line: a thin layer that parses, calls the Python API, prints."""

from __future__ import annotations

import platform

import typer

import mmdtok

app = typer.Typer(
    name="mmdtok",
    help="Audio tokenizers for music language models: quantizers, an independence loss, "
         "codecs.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Audio tokenizers for music language models."""


@app.command()
def version() -> None:
    """Print the versions of mmdtok, PyTorch and Python."""
    import torch

    typer.echo(f"mmdtok {mmdtok.__version__}")
    typer.echo(f"torch {torch.__version__}")
    typer.echo(f"python {platform.python_version()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
