"""Is a job's compiled data whole? So that a requeued job reuses it instead of compiling again.

Runs inside the job, under kraken's own Python (it imports only pyarrow, which kraken needs, and
the standard library): the job writes it into its folder and calls

    python arrow_check.py record COMPILED_DIR SPLIT_DIR   # after compiling: writes compiled.json
    python arrow_check.py check COMPILED_DIR SPLIT_DIR    # exit 0 only if every .arrow is whole

A part is whole when its .arrow opens (its footer is written last, so a cut file does not), its
rows match the line count kraken recorded in the file, that count matches compiled.json (written
only after every part compiled), and the split list it was compiled from is unchanged. Each call
prints one `##hpctrain` event line saying what it found.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

PARTS = ("train", "validation", "test")
MANIFEST = "compiled.json"
MARKER = "##hpctrain "


def lines_in(arrow: str) -> int:
    """The rows of a kraken .arrow file, checked against the count in its own metadata."""
    import pyarrow as pa

    with pa.memory_map(arrow, "rb") as source:
        reader = pa.ipc.open_file(source)
        rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        metadata = reader.schema.metadata or {}
    if b"lines" in metadata:
        counted = json.loads(metadata[b"lines"]).get("counts", {}).get("all", rows)
        if counted != rows:
            raise ValueError(f"{arrow}: {rows} rows, but kraken recorded {counted}")
    return rows


def split_digest(split_dir: str, part: str) -> str:
    with open(os.path.join(split_dir, f"{part}.txt"), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def record(compiled_dir: str, split_dir: str) -> dict:
    manifest = {part: {"lines": lines_in(os.path.join(compiled_dir, f"{part}.arrow")),
                       "split": split_digest(split_dir, part)} for part in PARTS}
    path = os.path.join(compiled_dir, MANIFEST)
    with open(path + ".part", "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    os.replace(path + ".part", path)
    return manifest


def check(compiled_dir: str, split_dir: str) -> str | None:
    """None if every part is whole; "" if nothing was compiled yet; else why a part is not."""
    try:
        with open(os.path.join(compiled_dir, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return ""
    except ValueError as e:
        return f"{MANIFEST} is damaged ({e})"
    try:
        for part in PARTS:
            if manifest[part]["split"] != split_digest(split_dir, part):
                return f"the {part} split changed"
            found = lines_in(os.path.join(compiled_dir, f"{part}.arrow"))
            if found != manifest[part]["lines"]:
                return f"{part}.arrow has {found} lines, {manifest[part]['lines']} were compiled"
    except FileNotFoundError as e:
        return f"{os.path.basename(e.filename or '?')} is missing"
    except Exception as e:  # a cut or damaged file: compile again
        return f"{type(e).__name__}: {e}"
    return None


def event(**fields) -> None:
    print(MARKER + json.dumps({"event": "compiled", **fields}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("record", "check"):
        print("usage: arrow_check.py record|check COMPILED_DIR SPLIT_DIR", file=sys.stderr)
        return 2
    action, compiled_dir, split_dir = argv
    if action == "record":
        manifest = record(compiled_dir, split_dir)
        event(reused=False, lines={part: manifest[part]["lines"] for part in PARTS})
        return 0
    problem = check(compiled_dir, split_dir)
    if problem is not None:
        if problem:
            print(f"compiling again: {problem}", flush=True)
        return 1
    with open(os.path.join(compiled_dir, MANIFEST), encoding="utf-8") as handle:
        manifest = json.load(handle)
    event(reused=True, lines={part: manifest[part]["lines"] for part in PARTS})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
