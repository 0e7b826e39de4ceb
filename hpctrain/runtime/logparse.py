"""Turning a job's raw output into structured events, one line at a time (streaming, constant
memory).

Understands ketos 4.3 to 7.x output (run without `-v`, `COLUMNS=250`) and hpctrain event lines
that any script can print:

    ##hpctrain {"event": "metrics", "epoch": 3, "val_auc": 0.91}

An event is a flat JSON object with at least `event`. Kinds produced here:
`epoch` (epoch, total, metrics, early_stopping), `best` (metric, value, epoch), `model` (path,
score),
`early_stop`, `stopped` (reason), `test` (char_accuracy, word_accuracy), `warning` (line),
`alert` / `alert_cleared` (a project's metric bounds, see alerts.py), and anything a script
sends with the marker. A `metrics` event is flat: `epoch`, optional `total`, then name: number.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Iterator

MARKER = "##hpctrain "
MONITORED = ("val_mean_iu", "val_accuracy", "val_auc")  # first present wins: segtrain, train, user

_STAGE = re.compile(r"stage (\d+)/(\d+|∞)")
_METRIC = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): (-?[0-9.]+(?:e-?\d+)?|-?inf|nan)")
_EARLY = re.compile(r"early_stopping: (\d+)/(\d+)")
_CONVERT = re.compile(
    r"(?:Converting|Moving) best model (.+?) \((?:score: )?([-0-9.e]+|-?inf|nan)\) "
    r"to (?:weights file |weights )?(.+)$"
)
_CHAR_ACC = re.compile(r"^([0-9.]+)%\s+Character Accuracy$")
_WORD_ACC = re.compile(r"^([0-9.]+)%\s+Word Accuracy$")
_AVG_ACC = re.compile(r"Average accuracy: ([0-9.]+)%")
_MAX_EPOCHS = re.compile(r"stopped: `?max_epochs=(\d+)`? reached")
_ERROR = re.compile(r"^(Error: .+|[A-Za-z_][\w.]*(Error|Exception): .+)$")


class LogParser:
    """Feed it lines; it returns the events each line produces and remembers the last error line."""

    def __init__(self, monitor: str | None = None, alerts=()) -> None:
        from .alerts import AlertWatch

        self.last_error: str | None = None
        self.best: float | None = None
        self.monitored = (monitor,) if monitor else MONITORED
        self.alerts = AlertWatch(alerts)

    def feed(self, line: str) -> list[dict]:
        line = line.rstrip("\r\n")
        if not line:
            return []
        if line.startswith(MARKER):
            return self._marker(line)
        if line.startswith("stage "):
            return self._stage(line)
        if "best model" in line:
            match = _CONVERT.search(line)
            if match:
                return [
                    {
                        "event": "model",
                        "path": match.group(3).strip(),
                        "score": float(match.group(2)),
                    }
                ]
        if "Accuracy" in line or "accuracy" in line:
            return self._accuracy(line)
        if "max_epochs=" in line:
            match = _MAX_EPOCHS.search(line)
            if match:
                return [{"event": "stopped", "reason": "max_epochs", "epochs": int(match.group(1))}]
        if line.startswith(("WARNING", "[WARNING")) and (
            "Invalid input" in line or "Could not open" in line
        ):
            return [{"event": "warning", "line": line.strip()}]
        if line.endswith(": command not found"):
            self.last_error = line.strip()
        elif "Error" in line or "Exception" in line:
            if _ERROR.match(line.strip()):
                self.last_error = line.strip()
        return []

    def _marker(self, line: str) -> list[dict]:
        try:
            event = json.loads(line[len(MARKER) :])
        except ValueError:
            return [{"event": "warning", "line": f"unreadable event line: {line[:200]}"}]
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            return [
                {"event": "warning", "line": f"event line without an 'event' name: {line[:200]}"}
            ]
        events = [event]
        if event["event"] == "metrics":
            events += self._best_from(event, event.get("epoch"))
            events += self.alerts.check(event, event.get("epoch"))
        return events

    def _stage(self, line: str) -> list[dict]:
        match = _STAGE.match(line)
        if not match:
            return []
        metrics = {k: float(v) for k, v in _METRIC.findall(line) if k != "early_stopping"}
        total = None if match.group(2) == "∞" else int(match.group(2)) + 1
        epoch = int(match.group(1)) + 1
        event = {"event": "epoch", "epoch": epoch, "total": total, "metrics": metrics}
        events = [event]
        early = _EARLY.search(line)
        if early:
            waited, lag = int(early.group(1)), int(early.group(2))
            event["early_stopping"] = [waited, lag]
        events += self._best_from(metrics, epoch)
        events += self.alerts.check(metrics, epoch)
        if early and waited >= lag:
            events.append({"event": "early_stop", "epoch": epoch})
        return events

    def _best_from(self, metrics: dict, epoch) -> list[dict]:
        for name in self.monitored:
            value = metrics.get(name)
            if isinstance(value, (int, float)):
                if self.best is None or value > self.best:
                    self.best = value
                    return [{"event": "best", "metric": name, "value": value, "epoch": epoch}]
                return []
        return []

    def _accuracy(self, line: str) -> list[dict]:
        text = line.strip()
        for pattern, key in ((_CHAR_ACC, "char_accuracy"), (_WORD_ACC, "word_accuracy")):
            match = pattern.match(text)
            if match:
                return [{"event": "test", key: round(float(match.group(1)) / 100, 6)}]
        match = _AVG_ACC.search(text)
        if match:
            return [{"event": "test", "char_accuracy": round(float(match.group(1)) / 100, 6)}]
        return []


def parse_lines(lines: Iterable[str]) -> Iterator[dict]:
    """Stream events out of lines (a file object works: it is read lazily)."""
    parser = LogParser()
    for line in lines:
        yield from parser.feed(line)


# Every line the parser acts on contains one of these; the rest of a log (tables, progress noise)
# is skipped in bulk without being decoded or split into lines.
_KEYS = (
    b"stage ",
    MARKER.encode(),
    b"best model",
    b"ccuracy",
    b"max_epochs=",
    b"WARNING",
    b"command not found",
    b"Error",
    b"Exception",
)


def _candidate_lines(block: bytes) -> Iterator[bytes]:
    """The lines of `block` (whole lines) that contain one of _KEYS, in order, each once."""
    starts = set()
    for key in _KEYS:
        hit = block.find(key)
        while hit != -1:
            start = block.rfind(b"\n", 0, hit) + 1
            starts.add(start)
            end = block.find(b"\n", hit)
            if end == -1:
                break
            hit = block.find(key, end)
    for start in sorted(starts):
        end = block.find(b"\n", start)
        yield block[start:] if end == -1 else block[start:end]


MAX_LINE = 64 << 20


def parse_file(path, parser: LogParser | None = None, chunk_size: int = 8 << 20) -> Iterator[dict]:
    """Stream the events of a log file of any size in constant memory (chunks, not the whole
    file)."""
    parser = parser or LogParser()
    with open(path, "rb") as handle:
        rest = b""
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            block = rest + chunk
            cut = block.rfind(b"\n") + 1
            if (
                cut == 0 and len(block) < MAX_LINE
            ):  # no line end yet: keep reading (a line is cut at MAX_LINE)
                rest = block
                continue
            block, rest = (block[:cut], block[cut:]) if cut else (block, b"")
            for line in _candidate_lines(block):
                yield from parser.feed(line.decode("utf-8", errors="replace"))
        for line in _candidate_lines(rest):
            yield from parser.feed(line.decode("utf-8", errors="replace"))


def main(argv: list[str] | None = None) -> int:
    """`python -m hpctrain.logparse LOG`: the events of a log, counted by kind (JSON), or
    --events for all of them."""
    import sys
    from collections import Counter

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m hpctrain.logparse LOG [--events]")
        return 0 if args else 2
    counts: Counter = Counter()
    for event in parse_file(args[0]):
        counts[event["event"]] += 1
        if "--events" in args:
            print(json.dumps(event, ensure_ascii=False))
    print(json.dumps(dict(counts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
