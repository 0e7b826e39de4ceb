"""Ground-truth validation: which pages are usable, and one line per problem file.

XML is read with expat and any DOCTYPE is refused, so entity expansion and external
entities can never be triggered by a hostile file. Each page's image must be an image: its
header is read (images.py), never the whole picture.
"""

from __future__ import annotations

import os
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from .images import check_image

PAGE_NS_PREFIX = "http://schema.primaresearch.org/PAGE/gts/pagecontent/"
ALTO_NS_PREFIX = "http://www.loc.gov/standards/alto/"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".jp2"}
MIN_PAGES_FOR_SPLIT = 10


def is_junk(name: str) -> bool:
    """macOS clutter that must never be validated nor pushed."""
    return name == ".DS_Store" or name.startswith("._") or name == "Thumbs.db"


@dataclass(frozen=True)
class Page:
    xml: str  # path relative to the ground-truth folder
    image: str  # path relative to the ground-truth folder
    lines: int


@dataclass
class Report:
    """What validation found; `problems` are errors, `notes` are informational."""

    folder: Path
    format: str
    pages: list[Page] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    xml_count: int = 0
    image_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def files(self) -> list[str]:
        """Relative paths of every file a push sends: each valid page's XML and image."""
        return sorted({p.xml for p in self.pages} | {p.image for p in self.pages})


class _Unsafe(Exception):
    pass


@dataclass
class _XmlFacts:
    root: str = ""
    namespace: str = ""
    image: str | None = None
    lines: int = 0


def read_xml_facts(path: Path) -> _XmlFacts:
    """One streaming expat pass: root element, referenced image, line count."""
    facts = _XmlFacts()
    in_alto_filename = []

    def doctype(*_args):
        raise _Unsafe("DOCTYPE declarations are not allowed (entity expansion risk)")

    def start(name, attrs):
        ns, _, local = name.rpartition("}") if "}" in name else ("", "", name)
        if not facts.root:
            facts.root, facts.namespace = local, ns
        if local == "Page" and "imageFilename" in attrs:
            facts.image = attrs["imageFilename"]
        elif local == "TextLine":
            facts.lines += 1
        elif local == "fileName":
            in_alto_filename.append("")

    def end(name):
        if name.endswith("fileName") and in_alto_filename:
            facts.image = facts.image or in_alto_filename.pop().strip()

    def text(data):
        if in_alto_filename:
            in_alto_filename[-1] += data

    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    with open(path, "rb") as handle:
        parser.ParseFile(handle)
    return facts


_real_dirs: dict[
    str, str
] = {}  # realpath of folders, for one validate() run (cleared at its start)


def _real_dir(path: str) -> str:
    if path not in _real_dirs:
        _real_dirs[path] = os.path.realpath(path)
    return _real_dirs[path]


def _inside(folder: Path, path: Path) -> bool:
    """True if `path`, links followed, stays under `folder` (folders resolved once, not per
    file)."""
    root = _real_dir(str(folder))
    real = os.path.join(_real_dir(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    if os.path.islink(real):
        real = os.path.realpath(real)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_page(folder: Path, rel: str, fmt: str) -> tuple[Page | None, str | None]:
    """Validate one XML file; return (page, None) or (None, problem)."""
    path = folder / rel
    try:
        facts = read_xml_facts(path)
    except _Unsafe as e:
        return None, f"{rel}: {e}"
    except xml.parsers.expat.ExpatError as e:
        return (
            None,
            f"{rel}: not well-formed XML "
            f"({xml.parsers.expat.ErrorString(e.code)} at line {e.lineno})",
        )
    except OSError as e:
        return None, f"{rel}: cannot read ({e.strerror})"
    kind = (
        "page"
        if facts.namespace.startswith(PAGE_NS_PREFIX) and facts.root == "PcGts"
        else "alto"
        if facts.namespace.startswith(ALTO_NS_PREFIX) and facts.root == "alto"
        else None
    )
    if kind is None:
        return None, f"{rel}: neither PAGE nor ALTO XML (root element {facts.root!r})"
    if kind != fmt:
        return (
            None,
            f"{rel}: is {kind.upper()} XML but the project's format is {fmt}; set 'format: {kind}'",
        )
    if not facts.image:
        return (
            None,
            f"{rel}: names no image "
            f"({'Page/@imageFilename' if kind == 'page' else 'sourceImageInformation/fileName'})",
        )
    image_rel = Path(rel).parent / facts.image
    image = folder / image_rel
    if Path(facts.image).is_absolute() or not _inside(folder, image):
        return None, f"{rel}: image path {facts.image!r} points outside the ground-truth folder"
    if not image.is_file():
        return None, f"{rel}: image {facts.image} not found next to it"
    if facts.lines == 0:
        return None, f"{rel}: has no text lines"
    return Page(xml=rel, image=os.path.normpath(image_rel.as_posix()), lines=facts.lines), None


def scan(folder: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """Walk the folder: (xml files, image files, skipped junk, problems with links)."""
    xmls, images, skipped, problems = [], [], [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if is_junk(name):
                skipped.append(rel)
                continue
            full = Path(dirpath) / name
            if full.is_symlink() and not _inside(folder, full):
                problems.append(f"{rel}: symbolic link pointing outside the ground-truth folder")
                continue
            suffix = full.suffix.lower()
            if suffix == ".xml":
                xmls.append(rel)
            elif suffix in IMAGE_SUFFIXES:
                images.append(rel)
    return xmls, images, skipped, problems


def validate(folder: Path, fmt: str = "page", need_split: bool = True) -> Report:
    """Validate a ground-truth folder. Never raises for bad content: problems go into the report."""
    report = Report(folder=folder, format=fmt)
    _real_dirs.clear()
    if not folder.is_dir():
        report.problems.append(f"{folder}: ground-truth folder not found")
        return report
    xmls, images, report.skipped, report.problems = scan(folder)
    report.xml_count, report.image_count = len(xmls), len(images)
    image_problems: dict[str, str | None] = {}  # each image is checked (and named) once
    for rel in xmls:
        page, problem = check_page(folder, rel, fmt)
        if page is None:
            report.problems.append(problem)
            continue
        if page.image not in image_problems:
            problem, note = check_image(folder, page.image)
            image_problems[page.image] = problem
            report.problems += [problem] if problem else []
            report.notes += [note] if note else []
        if image_problems[page.image] is None:
            report.pages.append(page)
    used = {p.image for p in report.pages} | set(image_problems)
    for rel in images:
        if rel not in used:
            report.notes.append(f"{rel}: image without a page XML; it will not be pushed")
    if not xmls:
        report.problems.append(
            f"{folder}: no XML files found; export PAGE or ALTO XML with the images"
        )
    elif need_split and len(report.pages) < MIN_PAGES_FOR_SPLIT:
        report.problems.append(
            f"{folder}: {len(report.pages)} valid pages, a train/validation/test split needs at "
            f"least "
            f"{MIN_PAGES_FOR_SPLIT}; add pages"
        )
    return report
