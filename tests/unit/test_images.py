"""Page images are checked at push from their header: type, size in pixels, not empty.

Images are made here: PNG, TIFF, BMP and JPEG 2000 boxes byte by byte (struct, zlib), and every
type again with Pillow where it is installed, to compare with what Pillow itself reads. The
product never imports Pillow.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from helpers import sample_gt, tree_snapshot
from hpctrain.jobs.groundtruth import validate
from hpctrain.jobs.images import HEAD, NotAnImage, check_image, read_header


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int) -> bytes:
    """A real grey PNG, made without Pillow."""
    rows = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tiff(width: int, height: int, order: str = "<", ifd_at_end: bool = True) -> bytes:
    """A grey TIFF whose directory comes after the pixels (beyond the first HEAD bytes)."""
    pixels = b"\x80" * (width * height)
    mark = b"II*\0" if order == "<" else b"MM\0*"
    data_at = 8 if ifd_at_end else 8 + 2 + 6 * 12 + 4
    entries = [(256, 4, width), (257, 3, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, data_at)]
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        field = struct.pack(order + ("H" if kind == 3 else "I"), value).ljust(4, b"\0")
        ifd += struct.pack(order + "HHI", tag, kind, 1) + field
    ifd += b"\0\0\0\0"
    if ifd_at_end:
        return mark + struct.pack(order + "I", 8 + len(pixels)) + pixels + ifd
    return mark + struct.pack(order + "I", 8) + ifd + pixels


def bigtiff(width: int, height: int) -> bytes:
    entries = [(256, 16, width), (257, 3, height)]
    ifd = struct.pack("<Q", len(entries))
    for tag, kind, value in entries:
        field = struct.pack("<Q" if kind == 16 else "<H", value).ljust(8, b"\0")
        ifd += struct.pack("<HHQ", tag, kind, 1) + field
    return b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + ifd + b"\0" * 8


def bmp_core(width: int, height: int) -> bytes:
    """An OS/2 bitmap: the 12-byte core header with 16-bit sizes."""
    return b"BM" + struct.pack("<IHHI", 26 + 4 * height, 0, 0, 26) + struct.pack(
        "<IHHHH", 12, width, height, 1, 24) + b"\0" * (4 * height)


def bmp_top_down(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 0, 0, 0, 0)


def jp2_boxes(width: int, height: int) -> bytes:
    def box(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", 8 + len(data)) + kind + data

    ihdr = box(b"ihdr", struct.pack(">IIHBBBB", height, width, 1, 7, 7, 0, 0))
    return (box(b"jP  ", b"\r\n\x87\n") + box(b"ftyp", b"jp2 \0\0\0\0jp2 ")
            + box(b"jp2h", ihdr + box(b"colr", b"\1\0\0\0\0\0\x11")) + box(b"jp2c", b"\0" * 8))


HAND_MADE = {
    "png": (png(37, 21), ".png", ("PNG", 37, 21)),
    "tiff little-endian, directory at the end": (tiff(90, 60), ".tif", ("TIFF", 90, 60)),
    "tiff big-endian": (tiff(70, 50, ">", ifd_at_end=False), ".tiff", ("TIFF", 70, 50)),
    "bigtiff": (bigtiff(70000, 3), ".tif", ("TIFF", 70000, 3)),
    "bmp os/2 core header": (bmp_core(12, 7), ".bmp", ("BMP", 12, 7)),
    "bmp top-down": (bmp_top_down(12, 7), ".bmp", ("BMP", 12, 7)),
    "jp2 boxes": (jp2_boxes(640, 480), ".jp2", ("JPEG 2000", 640, 480)),
    "gif": (b"GIF89a" + struct.pack("<HH", 33, 44) + b"\0\0\0;", ".gif", ("GIF", 33, 44)),
}


@pytest.mark.parametrize("case", list(HAND_MADE))
def test_hand_made_images_are_read_from_their_header(tmp_path, case):
    data, suffix, expected = HAND_MADE[case]
    path = tmp_path / f"page{suffix}"
    path.write_bytes(data)
    header = read_header(path)
    assert (header.kind, header.width, header.height) == expected
    assert check_image(tmp_path, path.name) == (None, None)


def test_the_tiff_directory_really_lies_beyond_the_head(tmp_path):
    data = tiff(90, 60)
    assert struct.unpack("<I", data[4:8])[0] > HEAD


PILLOW = [  # format, suffix, save options
    ("PNG", ".png", {}),
    ("JPEG", ".jpg", {}),
    ("JPEG", ".jpeg", {"comment": b"c" * 20000, "progressive": True}),  # SOF after 20 KB
    ("TIFF", ".tif", {"compression": "tiff_lzw"}),
    ("JPEG2000", ".jp2", {}),
    ("JPEG2000", ".j2k", {}),  # a bare codestream
    ("WEBP", ".webp", {"quality": 80}),  # VP8
    ("WEBP", ".webp", {"lossless": True}),  # VP8L
    ("WEBP", ".webp", {"exif": b"Exif\0\0II*\0\x08\0\0\0\0\0"}),  # VP8X
    ("BMP", ".bmp", {}),
    ("GIF", ".gif", {}),
]


@pytest.mark.parametrize("fmt, suffix, options", PILLOW,
                         ids=[f"{f}{s}-{'-'.join(o) or 'plain'}" for f, s, o in PILLOW])
def test_what_pillow_writes_is_read_with_the_size_pillow_reads(tmp_path, fmt, suffix, options):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / f"page{suffix}"
    Image.new("RGB", (123, 45), "white").save(path, fmt, **options)
    with Image.open(path) as image:
        size = image.size
    header = read_header(path)
    assert (header.width, header.height) == size == (123, 45)
    assert check_image(tmp_path, path.name) == (None, None)


NOT_IMAGES = {
    "text renamed .png": (b"<html><body>Not found</body></html>\n",
                          "not an image (starts with text)"),
    "empty file": (b"", "empty file (0 bytes)"),
    "truncated png header": (png(10, 10)[:20], "PNG file cut short: its header is incomplete"),
    "png without IHDR first": (b"\x89PNG\r\n\x1a\n" + chunk(b"tEXt", b"a\0b"),
                               "PNG header is damaged (no IHDR chunk first)"),
    "png of 0x0 pixels": (png(0, 0), "PNG header gives no size (0x0 pixels)"),
    "jpeg with no frame header": (b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02",
                                  "JPEG header is damaged (no frame header before the image "
                                  "data)"),
    "jpeg cut short": (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG file cut short"),
    "pdf renamed .png": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "not an image (a PDF document)"),
    "zip renamed .png": (b"PK\x03\x04\x14\0\0\0", "not an image (a zip archive)"),
    "heic renamed .png": (b"\0\0\0\x18ftypheic\0\0\0\0", "not an image (an ISO media file (heic"),
    "binary noise": (bytes(range(0, 256, 7)), "not an image (starts with bytes 00 07 0e 15"),
    "utf-8 text": ("Page 3 : « Lettre » — à relire\n".encode() * 40,
                   "not an image (starts with text)"),
}


@pytest.mark.parametrize("case", list(NOT_IMAGES))
def test_what_is_not_a_readable_image_is_one_problem_naming_the_file(tmp_path, case):
    data, fragment = NOT_IMAGES[case]
    (tmp_path / "page3.png").write_bytes(data)
    with pytest.raises(NotAnImage):
        read_header(tmp_path / "page3.png")
    problem, note = check_image(tmp_path, "page3.png")
    assert problem.startswith(f"page3.png: {fragment}"), problem
    assert problem.endswith("; re-export it from eScriptorium") and "\n" not in problem
    assert note is None


def test_a_huge_file_is_read_only_at_its_head(tmp_path, monkeypatch):
    """However big the page, the check reads HEAD bytes (and for JPEG, a few markers)."""
    path = tmp_path / "page.png"
    path.write_bytes(png(3000, 2000))
    reads = []
    real_open = open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read
        handle.read = lambda size=-1: reads.append(size) or real_read(size)
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    assert read_header(path).width == 3000
    assert reads == [HEAD]


def test_an_extension_that_disagrees_with_the_header_is_a_note(tmp_path):
    (tmp_path / "page3.png").write_bytes(bmp_core(4, 4))
    problem, note = check_image(tmp_path, "page3.png")
    assert problem is None
    assert note == ("page3.png: is a BMP image named .png (kraken reads it by its content; "
                    "rename it page3.bmp to avoid confusion)")


# -- through validation and the CLI -------------------------------------------------------------
@pytest.fixture
def gt(tmp_path) -> Path:
    folder = tmp_path / "gt"
    sample_gt.generate(folder, pages=10, lines=2)
    return folder


def test_sample_pages_pass_and_a_bad_image_is_one_problem_once(gt):
    assert validate(gt, "page").ok
    (gt / "page003.png").write_text("not a picture\n")
    xml = (gt / "page004.xml").read_text().replace("page004.png", "page003.png")
    (gt / "page004.xml").write_text(xml)  # a second page naming the same image
    report = validate(gt, "page", need_split=False)
    assert report.problems == [
        "page003.png: not an image (starts with text); re-export it from eScriptorium"]
    assert sorted(p.xml for p in report.pages) == sorted(
        f"page{i:03d}.xml" for i in range(1, 11) if i not in (3, 4))
    assert not any("page003.png" in n for n in report.notes)


@pytest.mark.parametrize("case, data, fragment", [
    ("text renamed .png", b"just some notes\n", "not an image (starts with text)"),
    ("empty file", b"", "empty file (0 bytes)"),
    ("truncated png header", png(10, 10)[:20], "PNG file cut short"),
])
def test_push_refuses_a_page_whose_image_is_not_one_and_sends_nothing(
    cli, workspace, demo_project, case, data, fragment
):
    (workspace / "ground_truth" / "Demo" / "page003.png").write_bytes(data)
    before = tree_snapshot(workspace)
    result = cli("push", "Demo")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"page003.png: {fragment}"), lines
    assert lines[0].endswith("; re-export it from eScriptorium"), lines
    assert len(lines) == 2 and lines[1].startswith("hpctrain: error: 1 problem(s) in ")
    assert "(nothing was sent)" in lines[1]
    assert tree_snapshot(workspace) == before
    assert not list((workspace / "cluster" / "Ground_Truth").iterdir())


def test_push_sends_a_jpeg_named_png_with_a_note(cli, workspace, demo_project):
    Image = pytest.importorskip("PIL.Image")
    page = workspace / "ground_truth" / "Demo" / "page003.png"
    with Image.open(page) as image:
        buffer = io.BytesIO()
        image.convert("L").save(buffer, "JPEG")
    page.write_bytes(buffer.getvalue())
    result = cli("push", "Demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [n for n in data["notes"] if n.startswith("page003.png: is a JPEG image named .png")]
    assert "Ground_Truth/Demo/page003.png" in data["sent"]
