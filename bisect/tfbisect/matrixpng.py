"""A PNG of the matrix, which GitHub shows inline when attached to an issue."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tfbisect.outcome import Outcome
from tfbisect.reportdata import OUTCOME_WORDS, ReportData

FILL = {
    Outcome.REPRODUCED: (220, 38, 38),
    Outcome.NOT_REPRODUCED: (22, 163, 74),
    Outcome.SKIP: (156, 163, 175),
    Outcome.ERROR: (217, 119, 6),
    Outcome.TIMEOUT: (124, 58, 237),
}
ROW, LABEL, COLUMN, PAD = 24, 110, 230, 12


def render(data: ReportData, path: Path) -> Path:
    columns, versions = data.columns, data.versions
    font = ImageFont.load_default(size=13)
    titles = [data.headline()]
    if data.focus_probe:
        titles.append(f"each cell: verdict · outcome of probe {data.focus_probe}")
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(
        max(
            PAD * 2 + LABEL + COLUMN * max(len(columns), 1),
            PAD * 2 + max(measure.textlength(t, font=font) for t in titles),
            PAD * 2 + 130 * len(FILL),
        )
    )
    height = PAD * 2 + ROW * (len(versions) + 2 + len(titles))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, title in enumerate(titles):
        draw.text((PAD, PAD + i * ROW), title, fill="black", font=font)
    top = PAD + ROW * len(titles)
    for j, column in enumerate(columns):
        draw.text((PAD + LABEL + j * COLUMN + 4, top + 4), column, fill="black", font=font)
    for i, version in enumerate(versions):
        y = top + ROW * (i + 1)
        draw.text((PAD, y + 4), f"TF {version}", fill="black", font=font)
        for j, column in enumerate(columns):
            cell = data.cell(version, column)
            x = PAD + LABEL + j * COLUMN
            if cell is None:
                draw.rectangle((x, y, x + COLUMN - 4, y + ROW - 4), outline=(229, 231, 235))
                continue
            draw.rectangle((x, y, x + COLUMN - 4, y + ROW - 4), fill=FILL[cell.outcome])
            probe = data.probe_outcome(cell)
            label = OUTCOME_WORDS[cell.outcome] + (f" · {probe}" if probe else "")
            draw.text((x + 6, y + 4), label, fill="white", font=font)
    legend_y = top + ROW * (len(versions) + 1) + 4
    x = PAD
    for outcome, colour in FILL.items():
        draw.rectangle((x, legend_y, x + 12, legend_y + 12), fill=colour)
        draw.text((x + 16, legend_y - 1), OUTCOME_WORDS[outcome], fill="black", font=font)
        x += 130
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", optimize=True)
    return path
