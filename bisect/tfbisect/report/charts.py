"""Loss curves as inline SVG geometry: numbers only, so the template can escape every label."""

from __future__ import annotations

import math
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 360, 190, 34
COLOURS = {"reference": "#6b7280", "plain": "#dc2626", "decorated": "#2563eb"}
FALLBACK = ("#059669", "#d97706", "#7c3aed", "#db2777")


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    segments: tuple[str, ...]  # SVG polyline `points`, split where the curve has no value (NaN)


@dataclass(frozen=True)
class Chart:
    title: str
    series: tuple[Series, ...]
    y_min: float
    y_max: float
    epochs: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


MAX_SERIES, MAX_POINTS = 8, 1000  # a document is untrusted: a chart stays a chart


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def chart(title: str, raw_curves: dict[str, list[float | None]]) -> Chart | None:
    curves = {
        str(name)[:40]: [_number(v) for v in list(curve)[:MAX_POINTS]]
        for name, curve in list(raw_curves.items())[:MAX_SERIES]
    }
    values = [v for curve in curves.values() for v in curve if v is not None]
    epochs = max((len(c) for c in curves.values()), default=0)
    if not values or epochs == 0:
        return None
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / max(epochs - 1, 1))

    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * ((v - low) / (high - low))

    series = []
    for n, (name, curve) in enumerate(curves.items()):
        segments: list[str] = []
        current: list[str] = []
        for i, v in enumerate(curve):
            if v is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            current.append(f"{x(i):.1f},{y(v):.1f}")
        if current:
            segments.append(" ".join(current))
        colour = COLOURS.get(name, FALLBACK[n % len(FALLBACK)])
        series.append(Series(name=name, colour=colour, segments=tuple(segments)))
    return Chart(title=title, series=tuple(series), y_min=low, y_max=high, epochs=epochs)
