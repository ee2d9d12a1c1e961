"""Command line: ``adasr run | serve | eval | models | train | data build | data distill | plot``.

One module per command (group); :mod:`adasr.cli.common` holds what they share. Each command
imports the heavy modules it needs inside itself, so ``adasr --help`` stays light.

Every user mistake (bad input, missing model, malformed data or config) ends with a one-line
``error: ...`` on stderr and a non-zero exit code, never a traceback (:func:`main`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer
from rich.text import Text

from adasr.cli import data, eval, models, plot, run, serve, train
from adasr.cli.common import err, setup_logging
from adasr.errors import AdasrError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Adaptive streaming reasoning with language models.")
app.add_typer(data.data_app, name="data")
app.add_typer(plot.plot_app, name="plot")
app.command()(run.run)
app.command()(serve.serve)
app.command("eval")(eval.eval_cmd)
app.command()(models.models)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)


@app.callback()
def _main_options(
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="log progress to stderr: -v adasr's INFO, -vv DEBUG and library INFO")] = 0,
) -> None:
    """Adaptive streaming reasoning with language models."""
    setup_logging(verbose)


# typer >= 0.22 ships its own copy of click, whose exceptions are typer.TyperException, not click's
_USAGE_ERRORS = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))


def main() -> None:
    """Entry point: run the app, turning user errors into one-line messages."""
    try:
        app(standalone_mode=False)
    except AdasrError as e:
        err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except _USAGE_ERRORS as e:  # unknown option, bad value, missing argument: click's usage message
        show = getattr(e, "show", None)
        show() if show else err.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)
        sys.exit(getattr(e, "exit_code", 2))


__all__ = ["app", "main"]
