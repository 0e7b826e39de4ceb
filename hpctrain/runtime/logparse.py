"""Turning a job's raw output into structured events, one line at a time (streaming, constant
memory).

Understands ketos 4.3 to 7.x output (run without `-v`, `COLUMNS=250`) and hpctrain event lines
that any script can print:

    ##hpctrain {"event": "metrics", "epoch": 3, "val_auc": 0.91}

An event is a flat JSON object with at least `event`. Kinds produced here:
`epoch` (epoch, total, metrics, early_stopping), `best` (metric, value, epoch), `model` (path,
score), `early_stop` (epoch, best_epoch), `stopped` (reason), `test` (char_accuracy,
word_accuracy; a segmentation's `ketos segtest`: mean_iu, ...), `base_test` (the same scores of
the base model, tested before training, with `model`; or its `error`), `warning` (line),
`alert` / `alert_cleared` (a project's metric bounds, see alerts.py), and anything a script
sends with the marker. A `metrics` event is flat: `epoch`, optional `total`, then name: number.

The base model's test follows the step marker `{"event": "step", "step": "base_test", "model":
NAME}` (templates/kraken/_base_test.sh.j2); its scores, gathered until the next step or the end,
make one `base_test` event, and its error lines are not the job's.

ketos prints one `stage k/N` line per epoch (k from 0; N is `∞` when it has no bound, and
always on 4.3, whose job bound `epochs` then gives the total). Two things need care:

- Some versions print an epoch's line twice (kraken #603): once when its training batches end,
  still showing the previous validation, then after validation. An epoch is reported once. A
  line that repeats the last reported line's values (all but `*_step` metrics and the
  early-stopping column), or that has no validation metric yet, is held back until the same
  epoch's next line replaces it, or the next epoch shows it was a line of its own.
- Early stopping's column (`early_stopping: waited/lag best`) reaches lag/lag where Lightning
  decides to stop, but `--min-epochs` keeps training going and the count goes on (3/2, or back
  to 0 after an improvement); the decision stands (Lightning's `should_stop` is never reset),
  so the training ends at the first epoch both allow. `early_stop` is therefore reported once,
  when the training is over (ketos' "best model" line, or `finish()` for a job that exited
  cleanly), with the epoch it stopped at and the best epoch.
"""

from __future__ import annotations

import json
import re
from operator import itemgetter
from typing import Iterable, Iterator

MARKER = "##hpctrain "
MONITORED = ("val_mean_iu", "val_accuracy", "val_auc")  # first present wins: segtrain, train, user

# Epoch lines are matched as bytes (parse_file reads bytes; feed encodes its line), so that a
# line gives the same event whichever way it arrives.
_INF = "∞".encode()
_STAGE = re.compile(rb"stage ([0-9]+)/([0-9]+|\xe2\x88\x9e)([^\n]*)")
_METRIC = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*+): (-?[0-9.]++(?:e-?[0-9]++)?|-?inf|nan)")
_EARLY = re.compile(rb"early_stopping: ([0-9]+)/([0-9]+)(?: (-?[0-9.]+|-?inf|nan))?")
_CONVERT = re.compile(
    r"(?:Converting|Moving) best model (.+?) \((?:score: )?([-0-9.e]+|-?inf|nan)\) "
    r"to (?:weights file |weights )?(.+)$"
)
_CHAR_ACC = re.compile(r"^([0-9.]+)%\s+Character Accuracy$")
_WORD_ACC = re.compile(r"^([0-9.]+)%\s+Word Accuracy$")
_AVG_ACC = re.compile(r"Average accuracy: ([0-9.]+)%")
# ketos segtest: 4.x prints "Mean IOU: 0.812"; 7.x prints tables only, whose rows give the IOU
# of each pixel class (│ regions │ text │ 0.912 │ 0.801 │ 12 │) and baseline detection
# (│ Overall │ 0.9 │ 0.8 │ 0.85 │).
_SEG_LINE = re.compile(r"^(Mean Accuracy|Mean IOU|Frequency-weighted IOU|Class-independent "
                       r"Baseline IOU|Class-independent Region IOU): ([0-9.]+)$")
_SEG_NAMES = {"Mean Accuracy": "mean_accuracy", "Mean IOU": "mean_iu",
              "Frequency-weighted IOU": "freq_iu", "Class-independent Baseline IOU": "baseline_iu",
              "Class-independent Region IOU": "region_iu"}
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
BASE_TEST = "base_test"  # the step (and event) of the base model's test, before training
_MAX_EPOCHS = re.compile(r"stopped: `?max_epochs=([0-9]+)`? reached")
_ERROR = re.compile(r"^(Error: .+|[A-Za-z_][\w.]*(Error|Exception): .+)$")


_NAMES: dict[bytes, str] = {}  # metric names, each decoded once


def _nothing(metrics: dict) -> tuple:
    return ()


def _metrics(pairs: list[tuple[bytes, bytes]]) -> dict:
    """name: value of an epoch line's metrics (early stopping's count among them)."""
    try:
        return {_NAMES[k]: float(v) for k, v in pairs}
    except KeyError:  # a name not seen yet (a log has a handful; a hostile one is capped)
        if len(_NAMES) > 4096:
            _NAMES.clear()
        _NAMES.update((k, k.decode("ascii")) for k, _ in pairs)
        return _metrics(pairs)
    except ValueError:  # a value such as "1.2.3" is not a number: that one is left out
        found = {}
        for k, v in pairs:
            try:
                found[k.decode("ascii")] = float(v)
            except ValueError:
                pass
        return found


class LogParser:
    """Feed it lines; it returns the events each line produces and remembers the last error line.

    `epochs` is the job's bound on epochs, the total of an epoch line that shows none. Call
    `finish()` at the end of the output for what only the end can tell."""

    def __init__(self, monitor: str | None = None, alerts=(), epochs: int | None = None) -> None:
        from .alerts import AlertWatch

        self.last_error: str | None = None
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.monitored = (monitor,) if monitor else MONITORED
        self.alerts = AlertWatch(alerts)
        self.epochs = epochs
        self._scores: dict | None = None  # a test's scores gathered until its step ends
        self._base_error: str | None = None  # the first error line of the base model's test
        self._new_training()

    def _new_training(self) -> None:
        self._shown: int | None = None  # the last epoch reported
        self._next: int | None = None  # the epoch after it
        self._held: tuple | None = None  # a line held back: (epoch, total, metrics, column)
        self._stop_at: int | None = None  # first epoch whose waited count reached the lag
        # of the line reported last: its metric names, early-stopping column, values to compare
        self._seen_keys = self._seen_column = self._seen_values = None

    def feed(self, line: str) -> list[dict]:
        line = line.rstrip("\r\n")
        if not line:
            return []
        if line.startswith(MARKER):
            return self._marker(line)
        if line.startswith("stage "):
            match = _STAGE.match(line.encode("utf-8", "replace"))
            return self.stage_lines([match.groups()]) if match else []
        if "best model" in line:
            match = _CONVERT.search(line)
            if match:
                model = {"event": "model", "path": match.group(3).strip(),
                         "score": float(match.group(2))}
                return self._training_over(completed=True) + [model]
        if line.startswith(("│", "Mean ", "Frequency-", "Class-independent ")):
            self._segtest(line.strip())
            return []
        if "Accuracy" in line or "accuracy" in line:
            return self._accuracy(line)
        if "max_epochs=" in line:
            match = _MAX_EPOCHS.search(line)
            if match:
                stopped = {"event": "stopped", "reason": "max_epochs",
                           "epochs": int(match.group(1))}
                return self._training_over(completed=True) + [stopped]
        if line.startswith(("WARNING", "[WARNING")) and (
            "Invalid input" in line or "Could not open" in line
        ):
            return [{"event": "warning", "line": line.strip()}]
        if line.endswith(": command not found"):
            self._error(line.strip())
        elif "Error" in line or "Exception" in line:
            if _ERROR.match(line.strip()):
                self._error(line.strip())
        return []

    def _error(self, line: str) -> None:
        """An error line: the job's, or, while the base model is tested, that test's (whose
        failure is not the job's)."""
        if self._scores is not None and self._scores["event"] == BASE_TEST:
            self._base_error = self._base_error or line
        else:
            self.last_error = line

    def finish(self, completed: bool = False) -> list[dict]:
        """What the end of the output tells: a line still held back, and, if the job's process
        exited cleanly (`completed`), an early stop whose "best model" line never came, and the
        scores of a test still being gathered."""
        return self._training_over(completed) + self._scores_over()

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
        if event["event"] == "step":
            events = self._scores_over() + events
            if event.get("step") == BASE_TEST:
                model = event.get("model")
                self._scores = {"event": BASE_TEST, **({"model": model} if model else {})}
        elif event["event"] == "metrics":
            events += self._best_from(event, event.get("epoch"))
            events += self.alerts.check(event, event.get("epoch"))
        return events

    # -- epoch lines ------------------------------------------------------------------------
    def stage_lines(self, lines: Iterable[tuple[bytes, bytes, bytes]]) -> list[dict]:
        """The events of `stage` lines, each given as (epoch, total, rest of the line) bytes."""
        events: list[dict] = []
        find_metrics, find_column = _METRIC.findall, _EARLY.search
        for epoch, total, rest in lines:
            cut = rest.find(b": ")
            if cut < 0:
                metrics, column = {}, None
            else:
                start = rest.rfind(b" ", 0, cut) + 1  # metrics begin at the word before ": "
                metrics = _metrics(find_metrics(rest, start))
                column = None
                if metrics.pop("early_stopping", None) is not None:  # "early_stopping: 1/2 0.9"
                    column = find_column(rest, start)
                    if column is not None:
                        column = column.groups()
            epoch = int(epoch) + 1
            total = None if total == _INF else int(total) + 1
            if (  # the usual line: the next epoch, nothing held back, values of its own
                epoch == self._next
                and self._held is None
                and (
                    column != self._seen_column
                    or metrics.keys() != self._seen_keys
                    or self._values(metrics) != self._seen_values
                )
            ):
                self._show(events, epoch, total, metrics, column)
            else:
                self._epoch(events, epoch, total, metrics, column)
        return events

    def _epoch(self, events: list, epoch: int, total: int | None, metrics: dict, column) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if held[0] == epoch:  # the epoch's second line: the one after its validation
                return self._show(events, epoch, total, metrics, column)
            self._show(events, *held)  # a line of its own after all
        if self._shown is not None:
            if epoch == self._shown:
                return None  # the same epoch printed twice (kraken #603): reported once
            if epoch < self._shown:
                self._new_training()  # a training started again (a requeued job) in this output
        if self._repeats(metrics, column):
            self._held = (epoch, total, metrics, column)
        else:
            self._show(events, epoch, total, metrics, column)

    def _repeats(self, metrics: dict, column) -> bool:
        """Whether a line may be the first of an epoch printed twice: it shows no validation yet,
        or the same values as the line reported last (`*_step` metrics aside)."""
        if self._seen_keys is None:
            return not any(name.startswith("val_") for name in metrics)
        return (
            column == self._seen_column
            and metrics.keys() == self._seen_keys
            and self._values(metrics) == self._seen_values
        )

    def _metric_names(self, metrics: dict) -> None:
        """For a line whose metric names differ from the last one's: which values tell a repeated
        line (all but `*_step`), and which metric is monitored."""
        compared = [name for name in metrics if not name.endswith("_step")]
        self._values = itemgetter(*compared) if compared else _nothing
        self._monitor = next((name for name in self.monitored if name in metrics), None)

    def _show(self, events: list, epoch: int, total: int | None, metrics: dict, column) -> None:
        """Report an epoch line: its event, and the best value, early stopping and alerts."""
        if metrics.keys() != self._seen_keys:
            self._metric_names(metrics)
        self._shown, self._next = epoch, epoch + 1
        self._seen_keys, self._seen_column = metrics.keys(), column
        self._seen_values = self._values(metrics)
        event = {
            "event": "epoch",
            "epoch": epoch,
            "total": self.epochs if total is None else total,
            "metrics": metrics,
        }
        events.append(event)
        if column is not None:
            waited, lag = int(column[0]), int(column[1])
            event["early_stopping"] = [waited, lag]
            if waited >= lag and self._stop_at is None:
                self._stop_at = epoch
        name = self._monitor
        if name is not None:
            value = metrics[name]
            if self.best is None or value > self.best:
                self.best, self.best_epoch = value, epoch
                events.append({"event": "best", "metric": name, "value": value, "epoch": epoch})
        if self.alerts.alerts:
            events += self.alerts.check(metrics, epoch)

    def _training_over(self, completed: bool) -> list[dict]:
        """A training ended (ketos reported its best model or its bound, or the output ended):
        the line held back, then the early stop if early stopping ended it."""
        events: list[dict] = []
        if self._held is not None:
            self._show(events, *self._held)
        if completed and self._stop_at is not None:
            events.append({"event": "early_stop", "epoch": self._shown,
                           "best_epoch": self.best_epoch})
        self._new_training()
        return events

    def _best_from(self, metrics: dict, epoch) -> list[dict]:
        for name in self.monitored:
            value = metrics.get(name)
            if isinstance(value, (int, float)):
                if self.best is None or value > self.best:
                    self.best, self.best_epoch = value, epoch
                    return [{"event": "best", "metric": name, "value": value, "epoch": epoch}]
                return []
        return []

    def _accuracy(self, line: str) -> list[dict]:
        text = line.strip()
        found = None
        for pattern, key in ((_CHAR_ACC, "char_accuracy"), (_WORD_ACC, "word_accuracy")):
            match = pattern.match(text)
            if match:
                found = {key: round(float(match.group(1)) / 100, 6)}
        match = None if found else _AVG_ACC.search(text)
        if match:
            found = {"char_accuracy": round(float(match.group(1)) / 100, 6)}
        if found is None:
            return []
        if self._scores is not None and self._scores["event"] == BASE_TEST:
            self._scores.update(found)  # the base model's: one event once its test is over
            return []
        return [{"event": "test", **found}]

    def _segtest(self, text: str) -> None:
        """Gather a `ketos segtest` score line (4.x) or table row (7.x) into the test's scores."""
        scores = self._scores
        if scores is None:
            scores = self._scores = {"event": "test"}
        match = _SEG_LINE.match(text)
        if match:
            scores[_SEG_NAMES[match.group(1)]] = float(match.group(2))
            return
        cells = [cell.strip() for cell in text.strip("│").split("│")]
        if len(cells) == 4 and cells[0] == "Overall" and _NUMBER.match(cells[3]):
            scores["baseline_f1"] = float(cells[3])  # Class, Precision, Recall, F1
        elif len(cells) == 5 and _NUMBER.match(cells[2]) and _NUMBER.match(cells[3]):
            # Category, Class Name, Pixel Accuracy, IOU, Object Count
            scores.setdefault("_ious", []).append(float(cells[3]))

    def _scores_over(self) -> list[dict]:
        """The scores gathered while a test ran, as one event, once its step is over. A base
        model's test that gave no score says why (`error`); it did not stop the job."""
        scores, self._scores = self._scores, None
        if scores is None:
            return []
        ious = scores.pop("_ious", None)
        if ious and "mean_iu" not in scores:
            scores["mean_iu"] = round(sum(ious) / len(ious), 6)
        if "char_accuracy" in scores:
            scores["accuracy"] = scores["char_accuracy"]
        if scores["event"] == BASE_TEST and not scores.keys() - {"event", "model"}:
            scores["error"] = self._base_error or "the test printed no score"
        self._base_error = None
        if scores["event"] == "test" and len(scores) == 1:
            return []
        return [scores]


def parse_lines(lines: Iterable[str]) -> Iterator[dict]:
    """Stream events out of lines (a file object works: it is read lazily)."""
    parser = LogParser()
    for line in lines:
        yield from parser.feed(line)
    yield from parser.finish()


# parse_file reads bytes and decodes only the lines the parser acts on. Epoch lines (most of what
# it acts on) are found with one regex over each stretch between other lines. Every other line
# feed() acts on holds one of these needles; single bytes are found at memchr speed, so the rest
# of a log (tables, progress noise) costs next to nothing. A hit must pass its test, which looks
# only around it, before its line is decoded and fed.
_MARKER = MARKER.encode()


def _accuracy_line(block: bytes, at: int, start: int, end: int) -> bool:
    line_end = block.find(b"\n", at, end)
    line_end = end if line_end < 0 else line_end
    return block.find(b"ccuracy", max(start, block.rfind(b"\n", start, at) + 1), line_end) >= 0


_OTHER_LINES = (  # (needle, test of a hit: block, hit, start and end of the stretch)
    (b"#", lambda b, at, start, end: (at == start or b[at - 1] == 10)
     and b.startswith(_MARKER, at)),
    (b"best model", None),  # "Converting best model X (score: 0.9) to ...", 4.3: "Moving ..."
    (b"%", _accuracy_line),  # ketos test: "99.41%  Character Accuracy", "Average accuracy: 9%"
    (b"=", lambda b, at, start, end: b.endswith(b"max_epochs", start, at)),
    (b"W", lambda b, at, start, end: b.startswith(b"WARNING", at) and (
        at == start or b[at - 1] == 10 or (  # at a line's start, or after a "[" there
            b[at - 1] == 91 and (at - 1 == start or b[at - 2] == 10)))),
    (b"E", lambda b, at, start, end: b.startswith((b"Error: ", b"Exception: "), at)),
    (b"command not found", None),
    # ketos segtest: "Mean IOU: 0.8" and the like (4.x), table rows "│ ... │" (7.x)
    (b"IOU: ", None),
    (b"Mean Accuracy: ", None),
    ("│".encode(), lambda b, at, start, end: at == start or b[at - 1] == 10),
)
_STAGES = re.compile(rb"\nstage ([0-9]+)/([0-9]+|\xe2\x88\x9e)([^\n]*)")


def _other_lines(block: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each line of block[start:end] besides epoch lines that feed() may act on,
    in order. `start` is the start of a line, `end` the end of one."""
    found: dict[int, int] = {}
    find = block.find
    for needle, test in _OTHER_LINES:
        hit = find(needle, start, end)
        while hit >= 0:
            if test is None or test(block, hit, start, end):
                line_start = max(start, block.rfind(b"\n", start, hit) + 1)
                hit = find(b"\n", hit, end)
                hit = end if hit < 0 else hit  # the line's end
                if not block.startswith(b"stage ", line_start):  # epoch lines are found apart
                    found.setdefault(line_start, hit)
            hit = find(needle, hit + 1, end)
    return sorted(found.items())


def _stage_lines(block: bytes, start: int, end: int) -> list[tuple[bytes, bytes, bytes]]:
    lines = _STAGES.findall(block, start, end)  # each after a newline: not the one at `start`
    first = _STAGE.match(block, start, end)
    return [first.groups(), *lines] if first else lines


def _block_events(parser: LogParser, block: bytes, start: int, end: int) -> list[dict]:
    """The events of the whole lines block[start:end], in their order."""
    events: list[dict] = []
    at = start
    for line_start, line_end in _other_lines(block, start, end):
        if line_start > at:
            events += parser.stage_lines(_stage_lines(block, at, line_start))
        events += parser.feed(block[line_start:line_end].decode("utf-8", errors="replace"))
        at = line_end + 1
    if at < end:
        events += parser.stage_lines(_stage_lines(block, at, end))
    return events


MAX_LINE = 64 << 20  # a line is cut there


def parse_file(path, parser: LogParser | None = None, chunk_size: int = 8 << 20) -> Iterator[dict]:
    """Stream the events of a log file of any size in constant memory (chunks, not the whole
    file): the same events as parse_lines."""
    parser = parser or LogParser()
    with open(path, "rb") as handle:
        rest = b""  # a line begun in the chunks before
        while True:
            chunk = handle.read(chunk_size)
            if not chunk:
                break
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                rest += chunk
                if len(rest) >= MAX_LINE:
                    yield from _block_events(parser, rest, 0, len(rest))
                    rest = b""
                continue
            first = 0
            if rest:
                first = chunk.find(b"\n") + 1
                rest += chunk[:first]
                yield from _block_events(parser, rest, 0, len(rest))
            yield from _block_events(parser, chunk, first, cut)
            rest = chunk[cut:]
        if rest:
            yield from _block_events(parser, rest, 0, len(rest))
    yield from parser.finish()


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
    if "--events" in args:
        for event in parse_file(args[0]):
            counts[event["event"]] += 1
            print(json.dumps(event, ensure_ascii=False))
    else:
        counts.update(event["event"] for event in parse_file(args[0]))
    print(json.dumps(dict(counts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
