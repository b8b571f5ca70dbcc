"""Markdown tables: the one function that lays out every table the harness writes (leaderboard, metric reference)."""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: the header, a `|---|` rule, one line per row; `|` inside a cell is escaped.

    Cells are not padded to their column's width (as tabulate's pipe format pads them): padding makes every
    line as long as the longest, and the leaderboard's headline would no longer fit a screen as raw text.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under a header of {len(header)}: {row}")
    return [_line(header), "|" + "---|" * len(header), *(_line(row) for row in rows)]


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
