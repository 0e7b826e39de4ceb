"""`setup` reinstalls the cluster side when the build changes: the digest covers code and
templates (an edited template must reach remote jobs), and nothing else."""

from __future__ import annotations

import shutil

from hpctrain.app.setup import PACKAGE, build_id


def test_the_build_digest_covers_templates_and_code(tmp_path):
    copy = tmp_path / "hpctrain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert build_id(copy) == build_id(PACKAGE)
    template = copy / "templates" / "kraken" / "transcription.sh.j2"
    template.write_text(template.read_text() + "# edited\n")
    edited_template = build_id(copy)
    assert edited_template != build_id(PACKAGE)
    code = copy / "jobs" / "kraken.py"
    code.write_text(code.read_text() + "\n")
    assert build_id(copy) not in (edited_template, build_id(PACKAGE))


def test_the_build_digest_ignores_bytecode(tmp_path):
    copy = tmp_path / "hpctrain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = build_id(copy)
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert build_id(copy) == before
