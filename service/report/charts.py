"""Small inline SVG charts for the report: no plotting library, no script, nothing fetched, so the
report opens offline in any browser. Every chart is an `<svg class="chart">` whose marks carry
`class="mark"` (the browser test counts them).
"""

from __future__ import annotations

from html import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 220, 56, 16, 28, 36
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _svg(body: str, title: str, height: int = H, width: int = W) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" '
        f'font-size="11"><text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>'
        f"{body}</svg>"
    )


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _axis_y(lo: float, hi: float, y, label: str) -> str:
    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    out = "".join(
        f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
        f'<text x="{PAD_L - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>'
        for t in ticks
    )
    return out + (
        f'<text x="12" y="{(PAD_T + H - PAD_B) / 2}" transform="rotate(-90 12 {(PAD_T + H - PAD_B) / 2})" '
        f'text-anchor="middle">{escape(label)}</text>'
    )


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str) -> str:
    """One line per series (a loss or reward curve)."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return empty(title)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x = _scale(min(xs), max(xs), PAD_L, W - PAD_R)
    y = _scale(min(ys), max(ys), H - PAD_B, PAD_T)
    body = _axis_y(min(ys), max(ys), y, ylabel)
    body += f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 6}" text-anchor="middle">{escape(xlabel)}</text>'
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        body += f'<polyline class="mark" fill="none" stroke="{color}" stroke-width="2" points="{path}"/>'
        body += "".join(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="2" fill="{color}"/>' for a, b in pts)
        body += f'<text x="{W - PAD_R}" y="{PAD_T + 12 * (i + 1)}" text-anchor="end" fill="{color}">{escape(name)}</text>'
    return _svg(body, title)


def interval_chart(
    rows: list[tuple[str, float, float, float]],
    title: str,
    lo: float,
    hi: float,
    reference: float | None = None,
    reference_label: str = "",
) -> str:
    """One row per (label, value, low, high): a dot with its interval; an optional vertical reference."""
    if not rows:
        return empty(title)
    height = PAD_T + 24 * len(rows) + PAD_B
    left = 150
    x = _scale(lo, hi, left, W - PAD_R)
    body = "".join(
        f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{height - PAD_B + 4}" stroke="#eee"/>'
        f'<text x="{x(t):.1f}" y="{height - PAD_B + 16}" text-anchor="middle">{t:.2f}</text>'
        for t in [lo + (hi - lo) * i / 4 for i in range(5)]
    )
    if reference is not None:
        body += (
            f'<line x1="{x(reference):.1f}" x2="{x(reference):.1f}" y1="{PAD_T}" y2="{height - PAD_B}" '
            f'stroke="#999" stroke-dasharray="4 3"/><text x="{x(reference) + 3:.1f}" y="{height - 6}">'
            f"{escape(reference_label)}</text>"
        )
    for i, (label, value, low, high) in enumerate(rows):
        cy = PAD_T + 12 + 24 * i
        clamp = lambda v: min(max(v, lo), hi)  # noqa: E731 - a value off the axis sits at its edge
        body += (
            f'<text x="{left - 6}" y="{cy + 4}" text-anchor="end">{escape(label)}</text>'
            f'<line x1="{x(clamp(low)):.1f}" x2="{x(clamp(high)):.1f}" y1="{cy}" y2="{cy}" stroke="#333"/>'
            f'<circle class="mark" cx="{x(clamp(value)):.1f}" cy="{cy}" r="4" fill="{COLORS[0]}"/>'
            f'<text x="{W - PAD_R}" y="{cy + 4}" text-anchor="end" fill="#555">{value:.3f}</text>'
        )
    return _svg(body, title, height)


def bar_chart(
    groups: list[tuple[str, dict[str, float | None]]], title: str, lo: float = 0.0, hi: float = 1.0
) -> str:
    """Grouped vertical bars: one group per label, one bar per named value (the legend on top)."""
    names = list(dict.fromkeys(n for _, values in groups for n in values))
    if not names:
        return empty(title)
    y = _scale(lo, hi, H - PAD_B, PAD_T + 14)
    body = _axis_y(lo, hi, y, "")
    slot = (W - PAD_L - PAD_R) / len(groups)
    bar = slot * 0.8 / len(names)
    at = PAD_L
    for j, name in enumerate(names):
        body += (
            f'<rect x="{at}" y="{PAD_T - 4}" width="10" height="10" fill="{COLORS[j % 6]}"/>'
            f'<text x="{at + 14}" y="{PAD_T + 5}">{escape(name)}</text>'
        )
        at += 30 + 6 * len(name)  # about 6 px a character at 11 px
    for i, (label, values) in enumerate(groups):
        x0 = PAD_L + slot * i + slot * 0.1
        body += f'<text x="{PAD_L + slot * (i + 0.5):.1f}" y="{H - PAD_B + 14}" text-anchor="middle">{escape(label)}</text>'
        for j, name in enumerate(names):
            value = values.get(name)
            if value is None:
                continue
            v = min(max(value, lo), hi)
            body += (
                f'<rect class="mark" x="{x0 + bar * j:.1f}" y="{y(v):.1f}" width="{bar - 2:.1f}" '
                f'height="{y(lo) - y(v):.1f}" fill="{COLORS[j % 6]}"><title>{escape(name)}: '
                f"{values[name]:.3f}</title></rect>"
            )
    return _svg(body, title)


def lineage_chart(chain: list[dict], title: str) -> str:
    """Boxes from the first ancestor to the model, joined by arrows; each names its kind, id and data."""
    if not chain:
        return empty(title)
    box_w, gap = 150, 30
    width = max(W, 20 + len(chain) * (box_w + gap))
    body = (
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>'
    )
    for i, node in enumerate(chain):
        x0 = 20 + i * (box_w + gap)
        body += (
            f'<rect class="mark" x="{x0}" y="40" width="{box_w}" height="70" rx="6" fill="#f3f6fb" '
            f'stroke="{COLORS[0]}"/><text x="{x0 + box_w / 2}" y="60" text-anchor="middle" font-weight="bold">'
            f"{escape(node['label'])}</text>"
        )
        for k, line in enumerate(node.get("lines", [])[:3]):
            body += f'<text x="{x0 + box_w / 2}" y="{78 + 13 * k}" text-anchor="middle">{escape(line[:26])}</text>'
        if i:
            body += (
                f'<line x1="{x0 - gap + 2}" y1="75" x2="{x0 - 2}" y2="75" stroke="#555" '
                'marker-end="url(#arrow)"/>'
            )
    return _svg(body, title, 130, width)


def empty(title: str) -> str:
    """A chart with nothing to draw says so (and has no marks)."""
    return _svg(
        f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#888">no data yet</text>',
        title,
    )
