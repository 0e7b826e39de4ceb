#!/usr/bin/env python3
"""Generate a small synthetic ground-truth set: PageXML (or ALTO) + PNG pages.

Each page carries real rendered text lines with their baselines and boundary
polygons, so that `ketos compile`, `ketos train` and `ketos segtrain` accept it.
Deterministic for a given --seed. Needs Pillow (installed with kraken).

    python scripts/make_sample_gt.py ground_truth/Demo --pages 12
    python scripts/make_sample_gt.py /tmp/gt --pages 10 --format alto
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

WORDS = (
    "in principio erat verbum et verbum erat apud deum hoc erat in principio "
    "omnia per ipsum facta sunt et sine ipso factum est nihil quod factum est "
    "decretum gratiani canon lex ecclesia episcopus liber capitulum dominus "
    "anno domini millesimo quadringentesimo scriptum manu fratris"
).split()

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
WIDTH, MARGIN, LINE_HEIGHT, FONT_SIZE = 900, 40, 56, 30


def _points(pts: list[tuple[int, int]]) -> str:
    return " ".join(f"{x},{y}" for x, y in pts)


def _line_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))


def render_page(rng: random.Random, lines: int):
    """Return (image, [(text, baseline, polygon)])."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_SIZE)
    height = 2 * MARGIN + lines * LINE_HEIGHT
    image = Image.new("L", (WIDTH, height), 255)
    draw = ImageDraw.Draw(image)
    records = []
    for i in range(lines):
        text = _line_text(rng)
        top = MARGIN + i * LINE_HEIGHT
        x0 = MARGIN + rng.randint(0, 20)
        draw.text((x0, top), text, fill=0, font=font)
        left, _, right, bottom = draw.textbbox((x0, top), text, font=font)
        base_y = top + int(FONT_SIZE * 0.8)
        baseline = [(left, base_y), (right, base_y)]
        polygon = [
            (left - 4, top - 4),
            (right + 4, top - 4),
            (right + 4, bottom + 6),
            (left - 4, bottom + 6),
        ]
        records.append((text, baseline, polygon))
    return image, records


def page_xml(image_name: str, size: tuple[int, int], records) -> str:
    width, height = size
    lines = []
    for n, (text, baseline, polygon) in enumerate(records):
        lines.append(
            f'      <TextLine id="l{n}">\n'
            f'        <Coords points="{_points(polygon)}"/>\n'
            f'        <Baseline points="{_points(baseline)}"/>\n'
            f"        <TextEquiv><Unicode>{escape(text)}</Unicode></TextEquiv>\n"
            f"      </TextLine>\n"
        )
    region = [
        (MARGIN // 2, MARGIN // 2),
        (width - MARGIN // 2, MARGIN // 2),
        (width - MARGIN // 2, height - MARGIN // 2),
        (MARGIN // 2, height - MARGIN // 2),
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<PcGts xmlns="{PAGE_NS}">\n'
        "  <Metadata><Creator>hpctrain sample generator</Creator>"
        "<Created>2024-01-01T00:00:00</Created><LastChange>2024-01-01T00:00:00</LastChange></Metadata>\n"
        f"  <Page imageFilename={quoteattr(image_name)} "
        f'imageWidth="{width}" imageHeight="{height}">\n'
        '    <TextRegion id="r0" custom="structure {type:text;}">\n'
        f'      <Coords points="{_points(region)}"/>\n'
        + "".join(lines)
        + "    </TextRegion>\n  </Page>\n</PcGts>\n"
    )


def alto_xml(image_name: str, size: tuple[int, int], records) -> str:
    width, height = size
    lines = []
    for n, (text, baseline, polygon) in enumerate(records):
        xs = [x for x, _ in polygon]
        ys = [y for _, y in polygon]
        lines.append(
            f'        <TextLine ID="l{n}" HPOS="{min(xs)}" VPOS="{min(ys)}" '
            f'WIDTH="{max(xs) - min(xs)}" '
            f'HEIGHT="{max(ys) - min(ys)}" BASELINE="{_points(baseline).replace(",", " ")}">\n'
            f'          <Shape><Polygon POINTS="{_points(polygon).replace(",", " ")}"/></Shape>\n'
            f'          <String CONTENT={quoteattr(text)} HPOS="{min(xs)}" VPOS="{min(ys)}" '
            f'WIDTH="{max(xs) - min(xs)}" HEIGHT="{max(ys) - min(ys)}"/>\n'
            "        </TextLine>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{ALTO_NS}">\n'
        "  <Description><MeasurementUnit>pixel</MeasurementUnit>\n"
        f"    <sourceImageInformation><fileName>{escape(image_name)}</fileName>"
        "</sourceImageInformation>\n"
        "  </Description>\n"
        f'  <Layout><Page ID="p0" WIDTH="{width}" HEIGHT="{height}" PHYSICAL_IMG_NR="1">\n'
        f'    <PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">\n'
        f'      <TextBlock ID="r0" HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">\n'
        + "".join(lines)
        + "      </TextBlock>\n    </PrintSpace>\n  </Page></Layout>\n</alto>\n"
    )


def generate(out: Path, pages: int, lines: int = 6, fmt: str = "page", seed: int = 0) -> list[Path]:
    """Write `pages` pages into `out`; return the XML paths."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in range(1, pages + 1):
        image, records = render_page(rng, lines)
        image_name = f"page{p:03d}.png"
        image.save(out / image_name)
        text = (page_xml if fmt == "page" else alto_xml)(image_name, image.size, records)
        xml_path = out / f"page{p:03d}.xml"
        xml_path.write_text(text, encoding="utf-8")
        written.append(xml_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the pages into")
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--lines", type=int, default=6, help="text lines per page")
    parser.add_argument("--format", choices=("page", "alto"), default="page")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = generate(args.out, args.pages, args.lines, args.format, args.seed)
    print(f"wrote {len(written)} pages ({args.format}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
