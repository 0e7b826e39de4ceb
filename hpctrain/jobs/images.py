"""Page images checked from their header: the type (magic bytes) and the size in pixels.

Pure Python, nothing decoded: a file's first HEAD bytes tell PNG, JPEG, TIFF, JPEG 2000, WebP,
BMP and GIF apart and hold their dimensions; JPEG and TIFF may put them further on, where a
few small reads (seek, then read a marker or a directory entry) find them. A push of thousands
of pages reads a few KB of each.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEAD = 4096  # bytes read from every image
_JPEG_HOPS = 512  # JPEG markers looked at before the frame header is given up on
_TIFF_ENTRIES = 4096  # TIFF directory entries looked at, at most

# What each type may be named; another suffix is a note, since kraken reads by content.
SUFFIXES = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg", ".jpe"),
    "TIFF": (".tif", ".tiff"),
    "JPEG 2000": (".jp2", ".j2k", ".j2c", ".jpf", ".jpx"),
    "WebP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "GIF": (".gif",),
}


@dataclass(frozen=True)
class ImageHeader:
    kind: str  # a key of SUFFIXES
    width: int
    height: int


class NotAnImage(ValueError):
    """Raised when a file's header is not that of a readable page image; says why."""


class _Cut(Exception):
    """The header ends before what it announced (the file is truncated)."""


class _Reader:
    """Bytes of a file by offset: from the head already read, else one seek and one read."""

    def __init__(self, handle: BinaryIO, head: bytes):
        self.handle, self.head = handle, head

    def at(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self.head):
            data = self.head[offset : offset + size]
        else:
            self.handle.seek(offset)
            data = self.handle.read(size)
        if len(data) < size:
            raise _Cut
        return data


def read_header(path: Path) -> ImageHeader:
    """The type and size of the image at `path`; NotAnImage (or OSError) if it has none."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD)
        if not head:
            raise NotAnImage("empty file (0 bytes)")
        kind, reader = _kind(head), _Reader(handle, head)
        if kind is None:
            raise NotAnImage(f"not an image ({_describe(head)})")
        try:
            width, height = _SIZES[kind](reader)
        except _Cut:
            raise NotAnImage(f"{kind} file cut short: its header is incomplete") from None
        except (struct.error, ValueError) as e:
            raise NotAnImage(f"{kind} header is damaged ({e})") from None
    if width <= 0 or height <= 0:
        raise NotAnImage(f"{kind} header gives no size ({width}x{height} pixels)")
    return ImageHeader(kind, width, height)


def _kind(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "TIFF"
    if head.startswith((b"\0\0\0\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    return None


def _describe(head: bytes) -> str:
    """What a file that is no image starts with, in words a user can act on."""
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if head[4:8] == b"ftyp":
        return f"an ISO media file ({head[8:12].decode('ascii', 'replace').strip()}: HEIC, AVIF "
        "or video)"
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut at the sample's end is still text
        text = sample[: e.start].decode("utf-8") if e.start >= len(sample) - 3 else None
    if text is not None and text.strip() and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "starts with text"
    return f"starts with bytes {head[:8].hex(' ')}"


# -- the size of each type ---------------------------------------------------------------------
def _png(r: _Reader) -> tuple[int, int]:
    length, chunk = struct.unpack(">I4s", r.at(8, 8))
    if chunk != b"IHDR" or length < 8:
        raise ValueError("no IHDR chunk first")
    return struct.unpack(">II", r.at(16, 8))


_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}  # markers without a length (RSTn, TEM)


def _jpeg(r: _Reader) -> tuple[int, int]:
    """Walk the markers from SOI to the first frame header (SOFn): its height and width."""
    offset = 2
    for _ in range(_JPEG_HOPS):
        if r.at(offset, 1) != b"\xff":
            raise ValueError(f"no marker at byte {offset}")
        while r.at(offset + 1, 1) == b"\xff":  # fill bytes
            offset += 1
        marker = r.at(offset + 1, 1)[0]
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", r.at(offset + 2, 2))
        if length < 2:
            raise ValueError(f"marker length {length} at byte {offset}")
        if marker in _SOF:
            height, width = struct.unpack(">HH", r.at(offset + 5, 4))
            return width, height
        offset += 2 + length
    raise ValueError(f"no frame header in the first {_JPEG_HOPS} markers")


_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8 (BigTIFF)


def _tiff(r: _Reader) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first image directory."""
    order = "<" if r.at(0, 2) == b"II" else ">"
    big = r.at(2, 2) in (b"+\0", b"\0+")  # BigTIFF: 8-byte offsets, counts and values
    if big:
        (offset,) = struct.unpack(order + "Q", r.at(8, 8))
        (count,) = struct.unpack(order + "Q", r.at(offset, 8))
        start, entry, value_at = offset + 8, 20, 12
    else:
        (offset,) = struct.unpack(order + "I", r.at(4, 4))
        (count,) = struct.unpack(order + "H", r.at(offset, 2))
        start, entry, value_at = offset + 2, 12, 8
    count = min(count, _TIFF_ENTRIES)
    table, found = r.at(start, count * entry), {}
    for i in range(count):
        tag, kind = struct.unpack(order + "HH", table[i * entry : i * entry + 4])
        if tag in (256, 257):
            if kind not in _TIFF_TYPES:
                raise ValueError(f"tag {tag} has type {kind}")
            found[tag] = struct.unpack_from(order + _TIFF_TYPES[kind], table,
                                            i * entry + value_at)[0]
    if 256 not in found or 257 not in found:
        raise ValueError("no width or length in its first directory")
    return found[256], found[257]


def _jpeg2000(r: _Reader) -> tuple[int, int]:
    if r.at(0, 4) == b"\xff\x4f\xff\x51":  # a bare codestream: the SIZ marker
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", r.at(8, 16))
        return xsiz - xosiz, ysiz - yosiz
    offset, end = 0, None  # JP2 boxes: the image header box is inside the jp2h box
    for _ in range(64):
        length, box = struct.unpack(">I4s", r.at(offset, 8))
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", r.at(offset + 8, 8))
            header = 16
        if box == b"jp2h":
            offset, end = offset + header, offset + length if length else None
            continue
        if box == b"ihdr":
            height, width = struct.unpack(">II", r.at(offset + header, 8))
            return width, height
        if length == 0 or (end is not None and offset + length > end):
            break
        if length < header:
            raise ValueError(f"box length {length} at byte {offset}")
        offset += length
    raise ValueError("no image header box")


def _webp(r: _Reader) -> tuple[int, int]:
    chunk = r.at(12, 4)
    if chunk == b"VP8 ":  # lossy: the frame header after its start code
        if r.at(23, 3) != b"\x9d\x01\x2a":
            raise ValueError("no VP8 start code")
        width, height = struct.unpack("<HH", r.at(26, 4))
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one
        if r.at(20, 1) != b"\x2f":
            raise ValueError("no VP8L signature")
        (bits,) = struct.unpack("<I", r.at(21, 4))
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        size = r.at(24, 6)
        return int.from_bytes(size[:3], "little") + 1, int.from_bytes(size[3:], "little") + 1
    raise ValueError(f"unknown first chunk {chunk!r}")


def _bmp(r: _Reader) -> tuple[int, int]:
    (size,) = struct.unpack("<I", r.at(14, 4))
    if size == 12:  # OS/2 core header: 16-bit sizes
        return struct.unpack("<HH", r.at(18, 4))
    if size < 40:
        raise ValueError(f"DIB header of {size} bytes")
    width, height = struct.unpack("<ii", r.at(18, 8))
    return width, abs(height)  # a negative height is a top-down bitmap


def _gif(r: _Reader) -> tuple[int, int]:
    return struct.unpack("<HH", r.at(6, 4))


_SIZES = {"PNG": _png, "JPEG": _jpeg, "TIFF": _tiff, "JPEG 2000": _jpeg2000, "WebP": _webp,
          "BMP": _bmp, "GIF": _gif}


def check_image(folder: Path, rel: str) -> tuple[str | None, str | None]:
    """(problem, note) for the page image `rel` under `folder`: a problem if it is not a readable
    image, a note if its name says another type than its header (kraken reads the content)."""
    try:
        header = read_header(folder / rel)
    except NotAnImage as e:
        return f"{rel}: {e}; re-export it from eScriptorium", None
    except OSError as e:
        return f"{rel}: cannot read ({e.strerror or type(e).__name__})", None
    suffix = Path(rel).suffix.lower()
    named = next((kind for kind, suffixes in SUFFIXES.items() if suffix in suffixes), None)
    if named is not None and named != header.kind:
        return None, (f"{rel}: is a {header.kind} image named {suffix} (kraken reads it by its "
                      f"content; rename it {Path(rel).stem}{SUFFIXES[header.kind][0]} to avoid "
                      "confusion)")
    return None, None
