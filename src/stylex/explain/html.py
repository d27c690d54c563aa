"""HTML building blocks shared by the report and the viewer: escaping, inline SVG plots, the page shell.

Every string that reaches a page goes through `esc` (text and attribute values alike); scripts and styles are
inline and pinned by their sha256 in the page's Content-Security-Policy, so nothing else can run, not even an
inline event handler that a missed escape would let in, and the page can reach no network.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
    "#bcbd22", "#7f7f7f", "#393b79", "#e7969c", "#637939", "#ad494a", "#3182bd", "#e6550d",
)  # fmt: skip
"""Class colours: 16 before they repeat (9 age groups shared a blue with 8)."""


def esc(value: object) -> str:
    """`value` as text safe inside an HTML element or a quoted attribute (& < > " ' escaped)."""
    return html.escape(str(value), quote=True)


def csp_source(text: str) -> str:
    """The CSP source expression "'sha256-...'" that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def page(
    title: str, body: str, css: str, js: str, img_src: str = "'self' file: data:", connect_src: str = "'none'"
) -> str:
    """A complete HTML document with inline `css` and `js`, locked down by a Content-Security-Policy.

    Args:
        title: plain text (escaped here).
        body: HTML built by the caller from escaped parts.
        css, js: the inline style sheet and script (their hashes go into the policy).
        img_src: CSP sources images may come from (the default names file: too, for browsers that do not count the
            files beside a page opened from disk as 'self').
        connect_src: CSP sources `fetch` may reach ("'none'" for the static report, "'self'" for the viewer).
    """
    policy = csp_policy(css, js, img_src, connect_src)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<link rel="icon" href="data:,">\n'  # no /favicon.ico request (a 404 in the console)
        f"<title>{esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n<script>{js}</script>\n"
        "</body>\n</html>\n"
    )


def csp_policy(css: str, js: str, img_src: str = "'self' file: data:", connect_src: str = "'none'") -> str:
    """The Content-Security-Policy of a page whose only style and script are `css` and `js`."""
    return (
        f"default-src 'none'; img-src {img_src}; style-src {csp_source(css)}; script-src {csp_source(js)}; "
        f"connect-src {connect_src}; base-uri 'none'; form-action 'none'"
    )


def png_data_uri(image) -> str:
    """A PIL image as a `data:image/png;base64,...` URI."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------------ plots
@dataclass
class Series:
    """One line of a plot.

    Attributes:
        name: legend text (escaped when drawn).
        points: (x, y) pairs; non-finite y are skipped.
        color: CSS colour.
        dashed: draw dashed (baselines).
        smooth: also draw a centred moving average over about this share of the points (0 = off); the raw line is
            then drawn faint.
    """

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    smooth: float = 0.0


def _moving_average(ys: list[float], share: float) -> list[float]:
    """Centred moving average over a window of about `share` of the points (shorter at the ends; no lag)."""
    half = max(1, int(share * len(ys) / 2))
    csum = [0.0]
    for y in ys:
        csum.append(csum[-1] + y)
    out = []
    for i in range(len(ys)):
        a, b = max(0, i - half), min(len(ys), i + half + 1)
        out.append((csum[b] - csum[a]) / (b - a))
    return out


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e9:
        return f"{int(v):,}"
    if 1e-4 <= abs(v) < 1e5:
        return f"{v:.3g}"
    return f"{v:.2e}"


def _thin(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    if len(points) <= max_points:
        return points
    step = len(points) / max_points
    return [points[int(i * step)] for i in range(max_points)] + [points[-1]]


def line_plot(
    series: Sequence[Series],
    title: str,
    width: int = 330,
    height: int = 170,
    y_range: tuple[float, float] | None = None,
    x_label: str = "step",
    max_points: int = 400,
) -> str:
    """An inline SVG line plot (no dependency): axes with min / max ticks, a title and a legend.

    Args:
        series: the lines; at least one with a finite point, else a "no data" box is drawn.
        title: plain text.
        y_range: fixed (low, high), e.g. (0, 1) for shares; default the data's range.
        x_label: the x axis name.
        max_points: lines are thinned to about this many points.
    """
    left, right, top = 58, 10, 34 if len(series) > 1 else 22
    bottom = 26
    pw, ph = width - left - right, height - top - bottom
    clean = [[(float(x), float(y)) for x, y in s.points if math.isfinite(float(y))] for s in series]
    all_pts = [p for pts in clean for p in pts]
    head = (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f'<text x="4" y="13" class="pt">{esc(title)}</text>'
    )
    if not all_pts:
        return head + f'<text x="{left}" y="{top + ph / 2}" class="pl">no data</text></svg>'
    x0, x1 = min(p[0] for p in all_pts), max(p[0] for p in all_pts)
    y0, y1 = y_range if y_range else (min(p[1] for p in all_pts), max(p[1] for p in all_pts))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    parts = [head]
    # legend (when there is more than one line): coloured names along the second line
    lx = 4.0
    for s in series if len(series) > 1 else []:
        parts.append(f'<rect x="{lx:.0f}" y="20" width="9" height="3" fill="{esc(s.color)}"/>')
        parts.append(f'<text x="{lx + 12:.0f}" y="25" class="pl">{esc(s.name)}</text>')
        lx += 18 + 6 * len(s.name)
    # frame, mid grid line and ticks
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pf"/>')
    ym = (y0 + y1) / 2
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(ym):.1f}" y2="{sy(ym):.1f}" class="pg"/>')
    for y in (y0, ym, y1):
        parts.append(f'<text x="{left - 3}" y="{sy(y) + 3:.1f}" class="pl" text-anchor="end">{_fmt(y)}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" class="pl">{_fmt(x0)}</text>')
    parts.append(f'<text x="{left + pw}" y="{height - 8}" class="pl" text-anchor="end">{_fmt(x1)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" class="pl" text-anchor="middle">{esc(x_label)}</text>')
    for s, pts in zip(series, clean, strict=True):
        if not pts:
            continue
        pts = _thin(pts, max_points)
        if len(pts) == 1:  # a polyline of one point draws nothing
            parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="2.5" fill="{esc(s.color)}"/>')
            continue
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        raw = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        opacity = ' stroke-opacity="0.3"' if s.smooth else ""
        parts.append(
            f'<polyline points="{raw}" fill="none" stroke="{esc(s.color)}" stroke-width="1.4"{dash}{opacity}/>'
        )
        if s.smooth and len(pts) > 2:
            ys = _moving_average([y for _, y in pts], s.smooth)
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for (x, _), y in zip(pts, ys, strict=True))
            parts.append(f'<polyline points="{line}" fill="none" stroke="{esc(s.color)}" stroke-width="1.8"/>')
    parts.append("</svg>")
    return "".join(parts)


def bar_row(label: str, value: float, total: float, color: str = PALETTE[0], text: str | None = None) -> str:
    """One horizontal bar (a share of `total`) with its label, as HTML (an SVG bar: the policy forbids style="")."""
    share = 0.0 if total <= 0 else max(0.0, min(1.0, value / total))
    return (
        f'<div class="bar"><span class="bl">{esc(label)}</span>'
        f'<svg class="bt" width="160" height="12" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="160" height="12" fill="#eee"/><rect width="{160 * share:.1f}" height="12" fill="{esc(color)}"/>'
        f'</svg><span class="bv">{esc(text if text is not None else _fmt(value))}</span></div>'
    )
