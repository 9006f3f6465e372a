"""A venv of its own for a tool the benches compare against but raiwatch never depends on."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

CACHE = Path.home() / ".cache" / "raiwatch"


def ensure(name: str, pins: tuple[str, ...]) -> Path:
    """The python of ``~/.cache/raiwatch/<name>`` with ``pins`` installed, made on first use (a
    minute; needs the package index) and again when the pins change."""
    home = CACHE / name
    python = home / "bin" / "python"
    stamp = home / "pins.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(pins):
        return python
    print(f"making a venv under {home} (once): {' '.join(pins)}", file=sys.stderr)
    venv.create(home, with_pip=True, clear=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    stamp.write_text("\n".join(pins))
    return python
