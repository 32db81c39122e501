"""The overview's chart: deliveries per hour by outcome, drawn on the server as SVG.

No script and no chart library: stacked bars (delivered, failed attempts, gone dead), a
title on each bar for the numbers, colours from console.css (the page's CSP allows no inline
style)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

from watcher.store import ChartBucket

WIDTH, HEIGHT = 720, 180
TOP, BOTTOM, LEFT = 10, 24, 36
OUTCOMES = (("delivered", "delivered"), ("failed", "failed attempts"), ("dead", "went dead"))


def chart_svg(buckets: Sequence[ChartBucket]) -> Markup:
    """``svg#chart`` for the store's hourly buckets, oldest first."""
    plot_h = HEIGHT - TOP - BOTTOM
    peak = max((b.delivered + b.failed + b.dead for b in buckets), default=0) or 1
    step = (WIDTH - LEFT) / max(1, len(buckets))
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        ' role="img" aria-labelledby="chart-title">',
        '<title id="chart-title">Deliveries per hour, by outcome</title>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{peak}</text>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i, bucket in enumerate(buckets):
        x = LEFT + i * step
        y = float(TOP + plot_h)
        counts = {"delivered": bucket.delivered, "failed": bucket.failed, "dead": bucket.dead}
        hour = time.strftime("%Y-%m-%d %H:00Z", time.gmtime(bucket.start))
        tip = f"{hour}: " + ", ".join(f"{counts[k]} {label}" for k, label in OUTCOMES)
        parts.append(f'<g class="bucket"><title>{escape(tip)}</title>')
        for key, _ in OUTCOMES:
            h = plot_h * counts[key] / peak
            if h > 0:
                y -= h
                parts.append(
                    f'<rect class="bar-{key}" x="{x + 1:.1f}" y="{y:.1f}"'
                    f' width="{max(1.0, step - 2):.1f}" height="{h:.1f}"/>'
                )
        parts.append("</g>")
        if i % 6 == 0:
            label = time.strftime("%H:00", time.gmtime(bucket.start))
            parts.append(
                f'<text class="label" x="{x + 1:.1f}" y="{HEIGHT - 8}">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built above from numbers and escaped text
