"""Charts as inline SVG, drawn on the server: a page shows them without JavaScript and
nothing is fetched from elsewhere. Each bar carries a <title> (its tooltip) and the
chart a text summary for screen readers and for the tests."""

from __future__ import annotations

from html import escape

from markupsafe import Markup


def bars(values: list[int], labels: list[str], *, title: str, width: int = 560, height: int = 140) -> Markup:
    """A bar per value, labels under the first, middle and last bars."""
    n = max(len(values), 1)
    top = max(values, default=0) or 1
    gap, bottom = 2, 18
    bar_w = max((width - gap * n) / n, 1)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="{escape(title)}: total {sum(values)}, peak {max(values, default=0)}">'
    ]
    for i, (v, label) in enumerate(zip(values, labels)):
        h = (height - bottom - 4) * v / top
        x = i * (bar_w + gap)
        parts.append(
            f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {v}</title></rect>"
        )
    for i in sorted({0, n // 2, n - 1}):
        if i < len(labels):
            x = i * (bar_w + gap)
            parts.append(f'<text x="{x:.1f}" y="{height - 4}">{escape(labels[i])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
