"""``fbt portfolio``: the portfolio's book on a date.

Positions, exposure, margin, cash; USD.
"""

from __future__ import annotations

import json

import click
from rich.table import Table

from fbt_pipelines.cli.app import console, main
from fbt_pipelines.config import paths


def load_snapshot(date: str | None) -> dict:
    """The book at the close of the last session on or before ``date``.

    ``date``: UTC; ``None`` = the last session. Read from the warehouse's
    portfolio tables.
    """
    import pandas as pd

    from fbt_pipelines.cli.data import connect_warehouse
    from fbt_pipelines.errors import FbtError
    from fbt_pipelines.usecases.portfolio import PORTFOLIO, book_snapshot

    if not paths().warehouse.exists():
        raise click.ClickException(f"no warehouse at {paths().warehouse}: run `fbt demo` first")
    if date is not None:
        try:
            pd.Timestamp(date)
        except ValueError:
            raise click.BadParameter(f"{date!r} is not a date (YYYY-MM-DD)", param_hint="--date") from None
    try:
        with connect_warehouse(read_only=True) as conn:
            return book_snapshot(conn, date, PORTFOLIO)
    except FbtError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--date", "date", default=None, help="UTC date YYYY-MM-DD (default: the last session).")
@click.option("--json", "as_json", is_flag=True)
def portfolio(date: str | None, as_json: bool) -> None:
    """The portfolio's book at the close of the last session on or before --date.

    Per market: contracts, raw price, FX rate, notional and margin (USD),
    P&L that day and to date; in total: equity, cash, free cash, margin,
    gross and net exposure (USD), leverage (gross / equity).

    \b
    Examples:
      fbt portfolio
      fbt portfolio --date 2020-03-16 --json
    """
    snap = load_snapshot(date)
    if as_json:
        click.echo(json.dumps(snap, indent=2))
        return
    table = Table(title=f"Portfolio book at the close of {snap['as_of']} (USD)")
    for col in ["market", "last session", "contracts", "price", "fx", "notional", "margin", "P&L day",
                "P&L to date"]:
        table.add_column(col, justify="left" if col in ("market", "last session") else "right")
    for m in snap["markets"]:
        table.add_row(m["root"], m["last_session"], f"{m['position']:,}", f"{m['raw_close']:,.4f}",
                      f"{m['fx_rate']:.4f}", f"{m['notional_usd']:,.0f}", f"{m['margin_usd']:,.0f}",
                      f"{m['pnl_day']:,.0f}", f"{m['pnl_to_date']:,.0f}")
    console.print(table)
    console.print(f"equity {snap['equity']:,.0f}  cash {snap['cash']:,.0f}  free cash {snap['free_cash']:,.0f}  "
                  f"margin {snap['margin']:,.0f} ({snap['margin_to_equity']:.1%} of equity)")
    console.print(f"gross exposure {snap['gross_exposure']:,.0f}  net exposure {snap['net_exposure']:,.0f}  "
                  f"leverage {snap['leverage']:.2f}x  P&L day {snap['pnl_day']:,.0f}  to date {snap['pnl_to_date']:,.0f}")
