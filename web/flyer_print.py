"""A flyer to print: a US Letter PDF (reportlab) and its QR code alone as PNG and SVG (segno).

Plain values in, files out; no program logic here (the tag and link come from
workflows/flyers.py, the words from program.toml through the caller). The QR code is drawn
into the PDF as vector squares, so it prints sharp at any size.

The page, top to bottom: what to do in a crisis (988 first), the program's name, what peer
support is in two lines, that it is confidential, the QR code, the short link to type
instead, and where the flyer hangs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import segno
from reportlab.lib.colors import HexColor, black, white
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.units import inch
from reportlab.pdfgen import canvas

WHAT_IT_IS = ("A trained colleague listens after a hard shift, a patient's death, an adverse event,",
              "or anything at work that stays with you. Not therapy, not a report: one peer to another.")
CONFIDENTIAL = "Confidential and free: a conversation between peers, not a report."
ASK = "Scan to ask for a peer supporter; one will reach out to you."

_INK = HexColor("#1d3557")
_CRISIS = HexColor("#9b1c1c")


@dataclass(frozen=True)
class FlyerFiles:
    pdf: Path
    png: Path
    svg: Path


def qr_code(link: str):
    """The QR code of `link`, error correction M (a smudged or creased flyer still scans)."""
    return segno.make(link, error="m", micro=False)


def _fit(c: canvas.Canvas, text: str, font: str, size: float, width: float) -> float:
    """The largest size up to `size` at which `text` fits in `width`."""
    while size > 6 and c.stringWidth(text, font, size) > width:
        size -= 0.5
    return size


def _draw_qr(c: canvas.Canvas, qr, x: float, y: float, size: float) -> None:
    """The code's dark modules as filled squares, with its quiet zone, in a `size` square at x, y."""
    border = 4
    count = qr.symbol_size(border=border)[0]
    module = size / count
    c.setFillColor(white)
    c.rect(x, y, size, size, stroke=0, fill=1)
    c.setFillColor(black)
    for row, line in enumerate(qr.matrix):
        for col, dark in enumerate(line):
            if dark:
                c.rect(x + (col + border) * module, y + size - (row + border + 1) * module,
                       module, module, stroke=0, fill=1)


def render(out_dir: str | Path, *, tag: str, link: str, program_name: str, crisis_national: str,
           crisis_emergency: str, place: str) -> FlyerFiles:
    """Write `<tag>.pdf`, `<tag>-qr.png` and `<tag>-qr.svg` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    qr = qr_code(link)
    files = FlyerFiles(out / f"{tag}.pdf", out / f"{tag}-qr.png", out / f"{tag}-qr.svg")
    qr.save(str(files.png), scale=12, border=4)
    qr.save(str(files.svg), scale=12, border=4, title=program_name)

    width, height = LETTER
    margin = 0.75 * inch
    text_width = width - 2 * margin
    c = canvas.Canvas(str(files.pdf), pagesize=LETTER)
    c.setTitle(f"{program_name}: flyer {tag}")
    c.setAuthor(program_name)

    # 988 first: the crisis box at the top of the page.
    box_h = 1.05 * inch
    top = height - margin
    c.setStrokeColor(_CRISIS)
    c.setLineWidth(2)
    c.roundRect(margin, top - box_h, text_width, box_h, 8, stroke=1, fill=0)
    c.setFillColor(_CRISIS)
    head = "In crisis? Call or text 988, any time."
    c.setFont("Helvetica-Bold", _fit(c, head, "Helvetica-Bold", 22, text_width - 24))
    c.drawCentredString(width / 2, top - 0.42 * inch, head)
    c.setFillColor(black)
    for i, line in enumerate((crisis_national, crisis_emergency)):
        c.setFont("Helvetica", _fit(c, line, "Helvetica", 11, text_width - 24))
        c.drawCentredString(width / 2, top - 0.68 * inch - i * 0.2 * inch, line)

    # The program and what it is.
    y = top - box_h - 0.75 * inch
    c.setFillColor(_INK)
    c.setFont("Helvetica-Bold", _fit(c, program_name, "Helvetica-Bold", 30, text_width))
    c.drawCentredString(width / 2, y, program_name)
    y -= 0.45 * inch
    c.setFillColor(black)
    for line in WHAT_IT_IS:
        c.setFont("Helvetica", _fit(c, line, "Helvetica", 13, text_width))
        c.drawCentredString(width / 2, y, line)
        y -= 0.25 * inch
    y -= 0.1 * inch
    c.setFillColor(_INK)
    c.setFont("Helvetica-Bold", _fit(c, CONFIDENTIAL, "Helvetica-Bold", 15, text_width))
    c.drawCentredString(width / 2, y, CONFIDENTIAL)

    # The QR code and the link to type instead.
    qr_size = 3.8 * inch
    y -= 0.3 * inch + qr_size
    _draw_qr(c, qr, (width - qr_size) / 2, y, qr_size)
    y -= 0.35 * inch
    c.setFillColor(black)
    c.setFont("Helvetica", _fit(c, ASK, "Helvetica", 13, text_width))
    c.drawCentredString(width / 2, y, ASK)
    y -= 0.4 * inch
    shown = link.split("://", 1)[-1]
    c.setFont("Helvetica-Bold", _fit(c, shown, "Helvetica-Bold", 20, text_width))
    c.drawCentredString(width / 2, y, shown)

    # Where it hangs, small, for whoever replaces it.
    c.setFont("Helvetica", 8)
    c.setFillColor(HexColor("#555555"))
    c.drawCentredString(width / 2, margin * 0.6, f"{place} \u00b7 flyer {tag}")
    c.showPage()
    c.save()
    return files
