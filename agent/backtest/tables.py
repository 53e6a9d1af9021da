"""The text and Markdown tables the outcome and the guarded outcome print (one layout)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Row = tuple[str, Sequence[str]]  # the left-aligned label, then the right-aligned cells


def usd(x: float) -> str:
    return f"{x:,.0f}"


def text_table(
    head: Sequence[str],
    rows: Sequence[Row],
    banner: Callable[[int, list[int]], str] | None = None,
) -> list[str]:
    """The column heads, a rule and the rows; ``banner(label_width, widths)`` may add a line
    above the heads (a group title over some columns)."""
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(head[i]), *(len(r[1][i]) for r in rows)) for i in range(len(head))]
    out = [] if banner is None else [banner(w0, widths)]
    out.append(f"{'window':<{w0}}  " + "  ".join(h.rjust(widths[i]) for i, h in enumerate(head)))
    out.append("-" * len(out[-1]))
    for label, cells in rows:
        out.append(f"{label:<{w0}}  " + "  ".join(c.rjust(widths[i]) for i, c in enumerate(cells)))
    return out


def markdown_table(head: Sequence[str], rows: Sequence[Row]) -> list[str]:
    return [
        "| window | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
    ]
