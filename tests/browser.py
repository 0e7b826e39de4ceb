"""A page opened in a real headless Chromium (Debian's `chromium`), driven through the DevTools
protocol over --remote-debugging-pipe: no port, no network, file:// only.

`open_page` loads a file and returns what a person would have seen go wrong (console messages,
uncaught exceptions, failed loads, images that did not decode) and a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Chromium reads commands from fd 3 and writes answers and events to fd 4, each message ending
# with a NUL byte.
COMMANDS_FD, ANSWERS_FD = 3, 4
IMAGES = """Array.from(document.images).map(i => ({src: i.src.slice(0, 40),
    loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth}))"""


@dataclass
class PageCheck:
    problems: list[str] = field(default_factory=list)  # console messages, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # each <img>: src (start), loaded, width
    screenshot: bytes = b""  # PNG of the viewport
    title: str = ""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process; `call` sends a command and waits for its answer, keeping
    the events that arrive meanwhile."""

    def __init__(self, executable: str, width: int = 1200, height: int = 1600):
        self.profile = tempfile.mkdtemp(prefix="hpctrain-chromium-")
        commands_r, self._commands = os.pipe()
        self._answers, answers_w = os.pipe()

        def child_fds():  # fds 3 and 4 in the child, whatever numbers the pipes got here
            keep = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_r, answers_w)]
            os.dup2(keep[0], COMMANDS_FD)
            os.dup2(keep[1], ANSWERS_FD)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=child_fds)
        os.close(commands_r)
        os.close(answers_w)
        self.size = (width, height)
        self.events: list[dict] = []
        self._buffer, self._next_id = b"", 0

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for answer in self._read(deadline, method):
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer.get("result", {})
                self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events += self._read(deadline, method)

    def _read(self, deadline: float, waiting_for: str) -> list[dict]:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self._answers], [], [], max(left, 0))
        if not ready:
            raise TimeoutError(f"chromium did not answer {waiting_for} in time")
        chunk = os.read(self._answers, 1 << 20)
        if not chunk:
            raise RuntimeError(f"chromium exited (code {self.process.poll()}) during "
                               f"{waiting_for}")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        return [json.loads(m) for m in messages if m]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._answers):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def open_page(path: Path, timeout: float = 60) -> PageCheck:
    """Load `path` (file://) in a fresh headless Chromium; what went wrong, and a screenshot."""
    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    browser = Browser(executable)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = browser.call("Target.attachToTarget",
                               {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            browser.call(domain, session=session)
        width, height = browser.size
        browser.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                     "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", timeout=timeout)
        images = _evaluate(browser, session, IMAGES)
        title = _evaluate(browser, session, "document.title")
        shot = browser.call("Page.captureScreenshot", {"format": "png"}, session=session)
        return PageCheck(_problems(browser.events), images, base64.b64decode(shot["data"]), title)
    finally:
        browser.close()


def _evaluate(browser: Browser, session: str, expression: str):
    found = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         session=session)
    return found["result"].get("value")


def _problems(events: list[dict]) -> list[str]:
    """Every console message (a page of ours writes none), uncaught exception, and log entry of
    level warning or error (a resource that failed to load, a blocked request...)."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            found.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append("uncaught: " + str(details.get("exception", {}).get("description")
                                            or details.get("text")))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("warning", "error"):
            entry = params["entry"]
            found.append(f"{entry.get('source')} {entry['level']}: {entry.get('text')} "
                         f"{entry.get('url', '')}".strip())
    return found
