"""A minimal OpenTelemetry Collector (OTLP receiver + Kafka exporter), built once per machine.

``build()`` runs the OpenTelemetry Collector Builder (ocb, ``go.opentelemetry.io/collector/cmd/builder``)
on ``deploy/otelcol/builder.yaml`` with the Go toolchain; every module comes through the Go module
proxy (``go env GOPROXY``). The binary is cached outside the clone, in
``~/.cache/raiwatch/otelcol-<version>/otelcol-raiwatch`` (``RAIWATCH_CACHE`` moves the root), so
every clone and CI run on the machine reuses it. Measured on the 2-core machine: about 6 CPU
minutes to compile (16 min of wall time under a load of 20), plus the module downloads; that
is why ``make test`` does not build it: the tests use it when it is there (``find``).

``Collector`` runs the binary on a config, on loopback, for tests and the demo.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from raiwatch.core.errors import RaiwatchError
from raiwatch.dev.localkafka import parent_death_signal

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT_ROOT / "deploy" / "otelcol"
MANIFEST = DEPLOY / "builder.yaml"
CONFIG = DEPLOY / "collector.yaml"
VERSION = "0.165.0"  # dist.version in the manifest; every collector module at this release
BINARY = "otelcol-raiwatch"


def cache_dir() -> Path:
    root = Path(os.environ.get("RAIWATCH_CACHE") or Path.home() / ".cache" / "raiwatch")
    return root / f"otelcol-{VERSION}"


def find() -> Path | None:
    """The cached collector binary (or ``RAIWATCH_OTELCOL``), None when none is built."""
    env = os.environ.get("RAIWATCH_OTELCOL")
    p = Path(env) if env else cache_dir() / BINARY
    return p if p.is_file() and os.access(p, os.X_OK) else None


def build(log=print) -> Path:
    """Build the collector into the cache (a no-op when it is there); its path."""
    found = find()
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None:
        raise RaiwatchError("building the OpenTelemetry Collector needs the Go toolchain (`go`) on PATH")
    out = cache_dir()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(out / "bin")}
    t0 = time.monotonic()
    log(f"installing the collector builder (ocb v{VERSION}) into {out / 'bin'} ...")
    _run([go, "install", f"go.opentelemetry.io/collector/cmd/builder@v{VERSION}"], env, work)
    manifest = work / "builder.yaml"
    manifest.write_text(
        MANIFEST.read_text(encoding="utf-8").replace("output_path: ./build", f"output_path: {work / 'build'}")
    )
    log("building the collector (OTLP receiver + Kafka exporter); this takes minutes ...")
    _run([str(out / "bin" / "builder"), "--config", str(manifest)], env, work)
    built = work / "build" / BINARY
    tmp = out / f".{BINARY}.tmp"
    shutil.copy2(built, tmp)
    tmp.replace(out / BINARY)  # atomic: a half-copied binary is never found
    log(f"built {out / BINARY} in {time.monotonic() - t0:.0f} s")
    return out / BINARY


def _run(cmd: list[str], env: dict, cwd: Path) -> None:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise RaiwatchError(f"{' '.join(cmd[:2])} failed (exit {p.returncode}):\n{tail}")


def validate(binary: Path, config: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``otelcol validate`` of ``config`` (exit 0 when the collector accepts it)."""
    return subprocess.run(
        [str(binary), "validate", "--config", str(config)],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """The collector on ``config`` with OTLP/HTTP on a free loopback port (``http_endpoint``), writing
    to Kafka at ``brokers``; output to ``log``. A context manager: stopped (SIGTERM) on exit."""

    def __init__(self, binary: Path, brokers: str, log: Path, config: Path = CONFIG, **env: str):
        self.binary, self.config, self.log = binary, config, log
        self.http_port, self.grpc_port = free_port(), free_port()
        self.env = {
            "KAFKA_BROKERS": brokers,
            "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def __enter__(self) -> Collector:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                [str(self.binary), "--config", str(self.config)],
                env={**os.environ, **self.env}, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=parent_death_signal(),  # a killed caller leaves no collector behind
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RaiwatchError(f"the collector exited ({self.proc.returncode}); see {self.log}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.http_port)) == 0:
                    return self
            time.sleep(0.1)
        raise RaiwatchError(
            f"the collector did not listen on {self.http_endpoint} within 60 s; see {self.log}"
        )

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the collector flushes its exporters' queues on SIGTERM
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
