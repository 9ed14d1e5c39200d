"""A PNG of the matrix, which GitHub shows inline when attached to an issue."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tfbisect.core.textsafe import one_line
from tfbisect.report import style
from tfbisect.report.reportdata import ReportData

FILL = style.FILL  # outcome -> colour, from the one table of looks
ROW, LABEL, PAD = 24, 110, 12
COLUMN_MIN, COLUMN_MAX = 150, 420
MAX_CHARS = 160  # a title or label longer than this is cut (text from records is unbounded)


def _label(text: str, limit: int = MAX_CHARS) -> str:
    """A title or label on one line, cut to `limit`, with control and invisible characters (a
    bidirectional override, a zero-width space) escaped as everywhere else: Pillow would draw a
    newline as a second line and may apply the bidirectional ones."""
    # Pillow's built-in font has no arrow: "good → bad" would show a box; nor an ellipsis.
    return one_line(text.replace("→", "->").replace("…", "..."), limit, mark="...")


def render(data: ReportData, path: Path) -> Path:
    columns, versions = data.columns, data.versions
    font = ImageFont.load_default(size=13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = [_label(f"{data.scenario}: {data.headline()}", 2 * MAX_CHARS)]
    if data.tally():
        titles.append(_label(data.tally(), 2 * MAX_CHARS))
    elif data.cells:
        titles.append("each cell: the scenario's verdict and where it ran")
    labels = {}
    for each in data.cells:
        secondary = data.secondary(each)
        parts = [data.look(each).word, *([secondary] if secondary else []), each.backend]
        labels[each.id] = _label(" · ".join(parts), 60)
    widest = max((measure.textlength(t, font=font) for t in labels.values()), default=0)
    column = int(min(COLUMN_MAX, max(COLUMN_MIN, widest + 16)))
    legend = data.legend()
    width = int(
        max(
            PAD * 2 + LABEL + column * max(len(columns), 1),
            PAD * 2 + max(measure.textlength(t, font=font) for t in titles),
            PAD * 2 + sum(measure.textlength(_label(look.word, 40), font=font) + 40 for look in legend),
        )
    )
    height = PAD * 2 + ROW * (len(versions) + 2 + len(titles))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i, title in enumerate(titles):
        draw.text((PAD, PAD + i * ROW), title, fill="black", font=font)
    top = PAD + ROW * len(titles)
    for j, name in enumerate(columns):
        draw.text((PAD + LABEL + j * column + 4, top + 4), _label(name, 40), fill="black", font=font)
    for i, version in enumerate(versions):
        y = top + ROW * (i + 1)
        draw.text((PAD, y + 4), f"TF {version}", fill="black", font=font)
        for j, name in enumerate(columns):
            cell = data.cell(version, name)
            x = PAD + LABEL + j * column
            if cell is None:
                draw.rectangle((x, y, x + column - 4, y + ROW - 4), outline=(229, 231, 235))
                continue
            draw.rectangle((x, y, x + column - 4, y + ROW - 4), fill=data.look(cell).rgb)
            draw.text((x + 6, y + 4), labels[cell.id], fill="white", font=font)
    legend_y = top + ROW * (len(versions) + 1) + 4
    x = PAD
    for look in legend:
        draw.rectangle((x, legend_y, x + 12, legend_y + 12), fill=look.rgb)
        word = _label(look.word, 40)
        draw.text((x + 16, legend_y - 1), word, fill="black", font=font)
        x += int(measure.textlength(word, font=font)) + 40
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", optimize=True)
    return path
