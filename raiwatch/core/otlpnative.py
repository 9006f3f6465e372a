"""libotlpmap: the OTLP span mapping compiled (Go, ``raiwatch/core/otlpmap``), built once per source.

``OtlpSpans`` maps ``otlp_proto`` messages with it when it is built, and itself otherwise: the
library writes each span's telemetry-event.v1 JSON line exactly as the Python mapping would, and
hands back any message it cannot map exactly ("fallback"), which Python then maps. ``build()``
compiles it with the Go toolchain (``go build -buildmode=c-shared``; the OpenTelemetry protobuf
bindings come through the Go module proxy) into ``~/.cache/raiwatch/otlpmap-<source hash>/``
(``RAIWATCH_CACHE`` moves the root), so a library built from other sources is never loaded;
``RAIWATCH_OTLPMAP`` names a library built elsewhere (the container image's). ``make install``
builds it when ``go`` is on PATH; ``RAIWATCH_OTLP_NATIVE=0`` turns it off.

    python -m raiwatch.core.otlpnative    # build it (silent when built; else one line)
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import struct
import subprocess
import sys
from array import array
from pathlib import Path

import orjson

from raiwatch.core.codec import MAX_EVENT_BYTES
from raiwatch.core.errors import RaiwatchError

SOURCE = Path(__file__).resolve().parent / "otlpmap"
ABI = 1  # otlpmap.go's abi: the config, the out buffer and the mapping it implements
LIBRARY = "libotlpmap.so"
_HEADER = struct.Struct("<6I")
log = logging.getLogger(__name__)


def _digest() -> str:
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum", "otlpmap.go"):
        h.update((SOURCE / name).read_bytes())
    return h.hexdigest()[:16]


def library_path() -> Path | None:
    """Where the library is (or goes): ``RAIWATCH_OTLPMAP``, else the cache; None without sources."""
    if named := os.environ.get("RAIWATCH_OTLPMAP"):
        return Path(named)
    if not (SOURCE / "otlpmap.go").is_file():
        return None  # an install without the Go sources
    root = Path(os.environ.get("RAIWATCH_CACHE") or Path.home() / ".cache" / "raiwatch")
    return root / f"otlpmap-{_digest()}" / LIBRARY


def build(say=print) -> Path:
    """Compile the library for these sources (a no-op when it is built); its path."""
    out = library_path()
    if out is None:
        raise RaiwatchError(f"no Go sources in {SOURCE} (an install without them)")
    if out.is_file():
        return out
    go = shutil.which("go")
    if go is None:
        raise RaiwatchError("building libotlpmap needs the Go toolchain (`go`) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{LIBRARY}.{os.getpid()}.tmp")
    say(f"building {out} (Go, OTLP span mapping) ...")
    p = subprocess.run(
        [go, "build", "-buildmode=c-shared", "-trimpath", "-o", str(tmp), "."],
        cwd=SOURCE, capture_output=True, text=True, env={**os.environ, "CGO_ENABLED": "1"},
    )  # fmt: skip
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-10:])
        raise RaiwatchError(f"go build of libotlpmap failed (exit {p.returncode}):\n{tail}")
    tmp.with_suffix(".h").unlink(missing_ok=True)  # the C header cgo writes beside it
    tmp.replace(out)  # atomic: a half-written library is never loaded
    return out


class NativeSpans:
    """One mapping's handle in the library: ``message(raw)`` maps a whole message, or says None."""

    def __init__(self, lib: ctypes.CDLL, config: dict):
        self._lib = lib
        cfg = orjson.dumps({**config, "max_bytes": MAX_EVENT_BYTES})
        self._handle = lib.otlpmap_new(cfg, len(cfg))
        if self._handle < 0:
            raise RaiwatchError("libotlpmap refused the mapping's config (a build from other sources?)")

    def message(self, raw: bytes) -> tuple[tuple[int, int, int, int], bytes, dict[str, str], array] | None:
        """(spans, skipped not_genai, operation, no_model), ``b"["`` the events' JSON lines joined by
        ``b"\\n"`` ``b"]"``, their response ids by event id and start times (epoch seconds); None when
        Python must map this message."""
        out, n = ctypes.c_void_p(), ctypes.c_int()
        if self._lib.otlpmap_spans(self._handle, raw, len(raw), ctypes.byref(out), ctypes.byref(n)):
            return None
        try:
            buf = memoryview((ctypes.c_char * n.value).from_address(out.value)).cast("B")
            spans, not_genai, operation, no_model, _, size = _HEADER.unpack_from(buf)
            at = _HEADER.size
            lines = bytes(buf[at : at + size])
            at += size
            (rsize,) = struct.unpack_from("<I", buf, at)
            rids = orjson.loads(buf[at + 4 : at + 4 + rsize])
            ts = array("d")
            ts.frombytes(buf[at + 4 + rsize :])
        finally:
            self._lib.otlpmap_free(out)
        return (spans, not_genai, operation, no_model), lines, rids, ts


_lib: ctypes.CDLL | bool | None = False  # False: not looked for yet


def load() -> ctypes.CDLL | None:
    """The built library for these sources, None when it is not built (or turned off)."""
    global _lib
    if _lib is False:
        _lib = None
        path = None if os.environ.get("RAIWATCH_OTLP_NATIVE", "1") == "0" else library_path()
        if path is not None and path.is_file():
            try:
                lib = ctypes.CDLL(str(path))
                lib.otlpmap_abi.restype = ctypes.c_int
                abi = lib.otlpmap_abi()
            except (OSError, AttributeError) as e:
                log.warning("%s is not libotlpmap (%s); OTLP spans are mapped in Python", path, e)
                return None
            if abi != ABI:
                log.warning(
                    "%s is libotlpmap ABI %s, not %s; OTLP spans are mapped in Python", path, abi, ABI
                )
            else:
                lib.otlpmap_new.argtypes = [ctypes.c_char_p, ctypes.c_int]
                lib.otlpmap_spans.argtypes = [
                    ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int),
                ]  # fmt: skip
                lib.otlpmap_free.argtypes = [ctypes.c_void_p]
                _lib = lib
    return _lib


def main() -> int:
    """Build it; say so only when something happens (``make install`` runs this every time)."""
    if (path := library_path()) is not None and path.is_file():
        return 0
    try:
        path = build(say=lambda s: print(s, file=sys.stderr))
    except RaiwatchError as e:  # not fatal: OTLP spans are then mapped in Python
        print(f"libotlpmap not built, OTLP spans will be mapped in Python: {e}", file=sys.stderr)
        return 0
    print(f"built {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
