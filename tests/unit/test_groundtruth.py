"""Ground-truth validation against a matrix of broken inputs."""

from __future__ import annotations

import os

import pytest

from helpers import sample_gt
from hpctrain.jobs.groundtruth import MIN_PAGES_FOR_SPLIT, validate


@pytest.fixture
def gt(tmp_path):
    folder = tmp_path / "gt"
    sample_gt.generate(folder, pages=11, lines=2)
    return folder


def test_clean_set_is_valid(gt):
    report = validate(gt, "page")
    assert report.ok, report.problems
    assert len(report.pages) == 11 and report.xml_count == 11 and report.image_count == 11
    assert report.files()[:2] == ["page001.png", "page001.xml"]


def test_alto_set_is_valid_as_alto_and_refused_as_page(tmp_path):
    sample_gt.generate(tmp_path / "alto", pages=10, lines=2, fmt="alto")
    assert validate(tmp_path / "alto", "alto").ok
    report = validate(tmp_path / "alto", "page")
    assert len(report.problems) >= 10
    assert "is ALTO XML but the project's format is page" in report.problems[0]


def _break(gt, kind):
    xml = gt / "page003.xml"
    text = xml.read_text()
    if kind == "malformed":
        xml.write_text(text[: len(text) // 2])
    elif kind == "missing image":
        (gt / "page003.png").unlink()
    elif kind == "not page or alto":
        xml.write_text("<?xml version='1.0'?><TEI xmlns='http://www.tei-c.org/ns/1.0'/>")
    elif kind == "no image named":
        xml.write_text(text.replace('imageFilename="page003.png"', ""))
    elif kind == "image outside":
        xml.write_text(
            text.replace('imageFilename="page003.png"', 'imageFilename="../../etc/passwd"')
        )
    elif kind == "absolute image":
        xml.write_text(text.replace('imageFilename="page003.png"', 'imageFilename="/etc/passwd"'))
    elif kind == "no lines":
        start, end = text.index("<TextLine"), text.rindex("</TextLine>") + len("</TextLine>")
        xml.write_text(text[:start] + text[end:])
    elif kind == "entity expansion":
        xml.write_text(
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
            + text.split("?>", 1)[1].replace("hpctrain sample generator", "&lol2;")
        )
    elif kind == "external entity":
        xml.write_text(
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + text.split("?>", 1)[1].replace("hpctrain sample generator", "&e;")
        )
    elif kind == "symlink outside":
        (gt / "page003.png").unlink()
        os.symlink("/etc/hostname", gt / "page003.png")
    elif kind == "empty file":
        xml.write_text("")
    return "page003"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("malformed", "not well-formed XML"),
        ("missing image", "image page003.png not found"),
        ("not page or alto", "neither PAGE nor ALTO"),
        ("no image named", "names no image"),
        ("image outside", "outside the ground-truth folder"),
        ("absolute image", "outside the ground-truth folder"),
        ("no lines", "has no text lines"),
        ("entity expansion", "DOCTYPE declarations are not allowed"),
        ("external entity", "DOCTYPE declarations are not allowed"),
        ("symlink outside", "symbolic link pointing outside"),
        ("empty file", "not well-formed XML"),
    ],
)
def test_each_broken_page_gives_one_line_naming_the_file(gt, kind, message):
    stem = _break(gt, kind)
    report = validate(gt, "page", need_split=False)
    assert not report.ok
    mine = [p for p in report.problems if message in p]
    assert len(mine) == 1, report.problems
    assert mine[0].startswith(stem) and "\n" not in mine[0]
    assert all(p.startswith(stem) for p in report.problems)
    assert len(report.pages) == 10


def test_macos_clutter_is_skipped_not_validated(gt):
    (gt / ".DS_Store").write_bytes(b"\0\1junk")
    (gt / "._page001.xml").write_bytes(b"\0\5\26\7AppleDouble")
    report = validate(gt, "page")
    assert report.ok, report.problems
    assert sorted(report.skipped) == [".DS_Store", "._page001.xml"]
    assert ".DS_Store" not in report.files() and "._page001.xml" not in report.files()


def test_split_needs_ten_pages(tmp_path):
    sample_gt.generate(tmp_path / "few", pages=MIN_PAGES_FOR_SPLIT - 1, lines=1)
    report = validate(tmp_path / "few", "page", need_split=True)
    assert any("needs at least 10" in p for p in report.problems)
    assert validate(tmp_path / "few", "page", need_split=False).ok


def test_orphan_image_is_a_note_and_not_pushed(gt):
    (gt / "stray.png").write_bytes((gt / "page001.png").read_bytes())
    report = validate(gt, "page")
    assert report.ok
    assert report.notes == ["stray.png: image without a page XML; it will not be pushed"]
    assert "stray.png" not in report.files()


def test_missing_folder_and_empty_folder(tmp_path):
    assert "not found" in validate(tmp_path / "nope", "page").problems[0]
    (tmp_path / "empty").mkdir()
    assert "no XML files found" in validate(tmp_path / "empty", "page").problems[0]
