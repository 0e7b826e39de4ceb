#!/usr/bin/env python3
"""Dev/test environments only: let the CUDA torchvision wheel import next to the CPU torch.

PyPI's Linux torchvision is a CUDA build. Next to the CPU `torch==2.13.0` used on
the test machines, `import torchvision` dies with
`RuntimeError: operator torchvision::nms does not exist` (pytorch/pytorch#122494),
so `ketos compile/train` exit 1. kraken only needs torchvision's pure-Python
transforms. This script makes the `torch.library.register_fake(...)` decorators
of `torchvision/_meta_registrations.py` conditional on
`torchvision.extension._has_ops()`.

It does nothing unless that exact failure is present (a user's machine with a
matching CUDA torch, or macOS wheels, never needs it), and it is idempotent.
Run it with the Python of the environment to fix.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

FAILURE = "operator torchvision::nms does not exist"
MARKER = "# hpctrain-dev-fix"
HELPER = f"""

def _hpctrain_register_fake(name):  {MARKER}
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(name)(fn)
        return fn

    return wrapper
"""


def import_error() -> str:
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True
    )
    return "" if probe.returncode == 0 else probe.stderr


def patch(path: Path) -> bool:
    text = path.read_text()
    if MARKER in text:
        return False
    anchor = "import torchvision.extension  # noqa: F401\n"
    if anchor not in text:
        raise SystemExit(f"{path}: layout not recognised; not patched")
    text = text.replace(anchor, anchor + HELPER, 1)
    text = re.sub(
        r"^@torch\.library\.register_fake\(", "@_hpctrain_register_fake(", text, flags=re.M
    )
    path.write_text(text)
    return True


def main() -> int:
    error = import_error()
    if FAILURE not in error:
        print("torchvision imports fine (or fails differently): nothing to fix")
        return 0
    spec = importlib.util.find_spec("torchvision")
    target = Path(spec.origin).parent / "_meta_registrations.py"
    patch(target)
    remaining = import_error()
    if remaining:
        print(remaining, file=sys.stderr)
        return 1
    print(f"patched {target}: torchvision now imports next to the CPU torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
