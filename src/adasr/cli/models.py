"""``adasr models``: the models that run without a download, as tables or JSON."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console


def models(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
    """List the models that run without a download (bundled bases and trained adapters)."""
    from adasr.models import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = Console()
    for part in models_renderables(rows):
        console.print(part)


def models_renderables(rows: list[dict]) -> list:
    """What ``adasr models`` prints for :func:`adasr.models.list_models`'s rows, made to fit an
    80-column terminal with nothing cut: one table of name, kind, size and availability, then
    (when there are adapters) one of each adapter's base, training data and held-out figures
    (:func:`adasr.models.listing.heldout_line`), whose long cells wrap
    (words) or fold (longer words) instead of ending in an ellipsis."""
    from rich.table import Table

    width = max((len(r["name"]) for r in rows), default=4)  # model names are identifiers: never cut
    table = Table(title="models that run without a download", title_justify="left")
    table.add_column("name", min_width=width, overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("MB", justify="right", overflow="fold")
    table.add_column("available", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['size_mb']:.0f}" if r.get("size_mb") else "?",
                      "yes" if r.get("available") else "no")
    adapters = [r for r in rows if r.get("base") or r.get("trained_on")]
    if not adapters:
        return [table]
    details = Table(title="adapters", title_justify="left")
    details.add_column("name", min_width=width, overflow="fold")
    details.add_column("base, trained on; held out", overflow="fold")
    for r in adapters:
        cell = f"{r.get('base') or '?'}; {r.get('trained_on') or 'trained on: unknown'}"
        if r.get("heldout"):
            cell += f"\nheld out: {r['heldout']}"
        details.add_row(r["name"], cell)
    return [table, details]
