"""A real single-node Apache Kafka 4.x broker (KRaft) for tests, CI and the demo.

The broker jars come from Maven Central (``deploy/kafka/pom.xml``) and are cached in
``<project>/.cache/kafka/<version>/libs``; the broker runs as ``java ... kafka.Kafka`` in its own
process group with all its files (config, data, logs, pid) under one data directory.

Command line::

    python -m raiwatch.dev.localkafka install
    python -m raiwatch.dev.localkafka start [--data DIR] [--port N] [--controller-port N]
    python -m raiwatch.dev.localkafka status [--data DIR]
    python -m raiwatch.dev.localkafka stop [--data DIR]

``start`` detaches: the broker keeps running after the command exits, ``DIR/broker.pid`` and
``DIR/bootstrap`` say where it is, and ``stop`` reads them. The controller listens on
``--controller-port``, by default the port after ``--port`` (a free one if that is taken), so two
brokers started with two ``--port`` values run side by side. Only stdlib and kafka-python are used here.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEPLOY_DIR = PROJECT_ROOT / "deploy" / "kafka"
POM = KAFKA_DEPLOY_DIR / "pom.xml"
SERVER_PROPERTIES_TEMPLATE = KAFKA_DEPLOY_DIR / "server.properties.template"
LOG4J2_PROPERTIES = KAFKA_DEPLOY_DIR / "log4j2.properties"
DEFAULT_CACHE_ROOT = PROJECT_ROOT / ".cache" / "kafka"

DEFAULT_DATA_DIR = Path("var/kafka")
DEFAULT_PORT = 19092
JVM_HEAP = "512m"

PID_FILE = "broker.pid"
BOOTSTRAP_FILE = "bootstrap"
_MARKER = ".installed.json"
_MAIN_CLASS = "kafka.Kafka"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- install


def kafka_version() -> str:
    """Return the Kafka version pinned in ``deploy/kafka/pom.xml`` (property ``kafka.version``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    version = (node.text or "").strip() if node is not None else ""
    if not version:
        raise RuntimeError(f"{POM}: missing <properties><kafka.version>")
    return version


def java_available() -> bool:
    """True if a ``java`` executable is on PATH (the broker needs Java 17+)."""
    return shutil.which("java") is not None


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "java not found on PATH: the local Kafka broker needs a Java 17+ runtime "
            "(e.g. `apt-get install openjdk-17-jre-headless`)."
        )
    return java


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _install_complete(libs: Path, digest: str) -> bool:
    try:
        marker = json.loads((libs / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    jars = marker.get("jars") or []
    return marker.get("pom_sha256") == digest and bool(jars) and all((libs / j).is_file() for j in jars)


def install(cache_dir: Path | None = None) -> Path:
    """Download the broker jars with Maven (once) and return the ``libs`` directory holding them.

    Jars go to ``<cache_dir>/<version>/libs`` (default ``cache_dir``: ``<project>/.cache/kafka``).
    A marker written after a successful download (bound to the pom's hash) makes later calls return
    at once. Concurrent callers are serialised with a file lock. Raises RuntimeError if java or mvn is
    missing or Maven fails (with the tail of its output).
    """
    version = kafka_version()
    base = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_ROOT) / version
    libs = base / "libs"
    digest = _pom_digest()
    if _install_complete(libs, digest):
        return libs
    _require_java()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "mvn not found on PATH: Maven is needed once to fetch the Kafka jars from Maven Central "
            f"into {libs} (e.g. `apt-get install maven`)."
        )
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _install_complete(libs, digest):  # another process finished while we waited
            return libs
        tmp = base / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]  # fmt: skip
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"mvn did not finish in {exc.timeout:.0f}s: {' '.join(cmd)}") from exc
        jars = sorted(p.name for p in tmp.glob("*.jar")) if tmp.is_dir() else []
        if res.returncode != 0 or f"kafka_2.13-{version}.jar" not in jars:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = _tail_lines(_ANSI.sub("", (res.stdout or "") + (res.stderr or "")), 40)
            raise RuntimeError(
                f"Fetching the Kafka {version} jars failed (mvn exit {res.returncode}); check network "
                f"access to Maven Central and {POM}.\nCommand: {' '.join(cmd)}\n--- mvn output (tail) ---\n"
                f"{tail}"
            )
        marker = {"kafka_version": version, "pom_sha256": digest, "jars": jars}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    return libs


# --------------------------------------------------------------------------- helpers


def _tail_lines(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def _tail_file(path: Path, n: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return _tail_lines(f.read().decode("utf-8", "replace"), n)
    except OSError:
        return f"({path} not readable)"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _controller_port(port: int) -> int | None:
    """The port after ``port`` if it is free (19092 -> 19093), else None: LocalKafka picks a free one."""
    return port + 1 if port < 65535 and _port_free(port + 1) else None


def _random_cluster_id() -> str:
    """A Kafka ``Uuid`` string (22 chars base64url); like Kafka, avoid a leading '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def read_properties(path: Path) -> dict[str, str]:
    """Parse a simple ``key=value`` Java properties file (no line continuations or escapes)."""
    props: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def _pid_matches(pid: int, server_properties: Path) -> bool:
    """True if ``pid`` is a live (non-zombie) ``kafka.Kafka`` JVM started with this config file."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return _MAIN_CLASS.encode() in cmdline and str(server_properties).encode() in cmdline


def _wait_pid_gone(pid: int, alive: Callable[[], bool], timeout: float) -> bool:
    """Wait up to ``timeout`` s for a process we did not fork to exit; True if it did."""
    deadline = time.monotonic() + timeout
    fd: int | None = None
    with contextlib.suppress(OSError, AttributeError):
        fd = os.pidfd_open(pid)
    try:
        while alive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if fd is not None:
                select.select([fd], [], [], remaining)  # readable once the process has exited
            else:
                time.sleep(min(0.05, remaining))  # poll interval, bounded by the deadline
        return True
    finally:
        if fd is not None:
            os.close(fd)


def parent_death_signal() -> Callable[[], None] | None:
    """preexec_fn making the child get SIGTERM when the forking thread dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


def _probe(bootstrap: str, timeout: float) -> str | None:
    """Return None if the broker lists topics and reports itself in the cluster, else the reason."""
    from kafka import KafkaAdminClient  # kafka-python; imported lazily so `install` works without it

    ms = max(100, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="raiwatch-localkafka-probe",
            bootstrap_timeout_ms=ms, request_timeout_ms=ms, reconnect_backoff_ms=50,
            reconnect_backoff_max_ms=200,
        )  # fmt: skip
    except Exception as exc:
        return f"bootstrap: {exc!r}"
    try:
        admin.list_topics()
        if not admin.describe_cluster().get("brokers"):
            return "metadata lists no brokers yet"
        return None
    except Exception as exc:
        return f"admin: {exc!r}"
    finally:
        admin.close()


# --------------------------------------------------------------------------- broker


class LocalKafka:
    """One single-node KRaft Kafka broker whose config, data and logs live under ``data_dir``.

    Files: ``server.properties``, ``data/`` (log.dirs), ``logs/server.log`` (log4j), ``broker.out``
    (JVM stdout/stderr), ``broker.pid`` and ``bootstrap`` while running. Ports are fixed at
    construction (free ones picked when None), so ``restart()`` keeps the same bootstrap address.
    With ``die_with_parent`` the JVM gets SIGTERM if the thread that called ``start()`` dies
    (Linux), so a killed test run does not leave a broker behind.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        libs_dir: Path | None = None,
        heap: str = JVM_HEAP,
        die_with_parent: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else free_port()
        if controller_port is None:
            controller_port = free_port()
            while controller_port == self.port:
                controller_port = free_port()
        self.controller_port = controller_port
        self.libs_dir = libs_dir
        self.heap = heap
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None  # set when attached to a broker started by another process

    # -- paths
    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def server_properties(self) -> Path:
        """The rendered broker config."""
        return self.data_dir / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs`` (topic data and KRaft metadata)."""
        return self.data_dir / "data"

    @property
    def server_log(self) -> Path:
        """The broker's log4j log."""
        return self.data_dir / "logs" / "server.log"

    @property
    def stdout_log(self) -> Path:
        """JVM stdout/stderr (startup failures before log4j is up land here)."""
        return self.data_dir / "broker.out"

    @property
    def pid(self) -> int | None:
        """The JVM's pid, or None if not started/attached."""
        return self._proc.pid if self._proc is not None else self._pid

    @classmethod
    def attach(cls, data_dir: Path) -> LocalKafka | None:
        """Return a handle on the broker recorded in ``data_dir/broker.pid`` if it is running."""
        data_dir = Path(data_dir).resolve()
        try:
            pid = int((data_dir / PID_FILE).read_text().strip())
            props = read_properties(data_dir / "server.properties")
        except (OSError, ValueError):
            return None
        if not _pid_matches(pid, data_dir / "server.properties"):
            return None
        port = int(props["advertised.listeners"].rpartition(":")[2])
        controller_port = int(props["controller.quorum.voters"].rpartition(":")[2])
        broker = cls(data_dir, port, controller_port)
        broker._pid = pid
        return broker

    # -- lifecycle
    def is_running(self) -> bool:
        """True while the broker JVM is alive (not necessarily ready)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _pid_matches(self._pid, self.server_properties)

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            _require_java(), f"-Xmx{self.heap}", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_PROPERTIES}", f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def _write_config(self) -> None:
        text = string.Template(SERVER_PROPERTIES_TEMPLATE.read_text()).substitute(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=str(self.log_dir).replace("\\", "\\\\"),
        )
        self.server_properties.write_text(text)

    def _format_storage(self, libs: Path, timeout: float) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        cmd = self._java_cmd(
            libs, "kafka.tools.StorageTool", "format", "-t", _random_cluster_id(),
            "-c", str(self.server_properties),
        )  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if res.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format failed (exit {res.returncode}) for {self.log_dir}:\n"
                f"{_tail_lines(res.stdout + res.stderr, 40)}"
            )

    def start(self, timeout: float = 60) -> str:
        """Start the broker (formatting storage on first use) and return the bootstrap once it serves.

        Ready means a kafka-python admin client bootstraps, lists topics and sees this broker.
        Raises RuntimeError with the log tail if the JVM exits or ``timeout`` seconds pass
        (the clock starts after ``install()``, which may download the jars once).
        No-op if this handle's broker is already running.
        """
        if self.is_running():
            return self.bootstrap
        libs = self.libs_dir or install()
        deadline = time.monotonic() + timeout
        other = LocalKafka.attach(self.data_dir)
        if other is not None:
            raise RuntimeError(
                f"a broker (pid {other.pid}, {other.bootstrap}) already runs on {self.data_dir}; "
                "stop it first (`python -m raiwatch.dev.localkafka stop --data DIR`)"
            )
        if self.port == self.controller_port:
            raise RuntimeError(f"the controller needs a port of its own, not the broker's ({self.port})")
        for p in (self.port, self.controller_port):
            if not _port_free(p):
                raise RuntimeError(f"port 127.0.0.1:{p} is already in use; pick another (--port) or stop it")
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format_storage(libs, max(1.0, deadline - time.monotonic()))
        cmd = self._java_cmd(libs, _MAIN_CLASS, str(self.server_properties))
        with open(self.stdout_log, "ab") as out:
            self._proc = subprocess.Popen(  # preexec_fn only calls a prctl resolved before fork
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=parent_death_signal() if self.die_with_parent else None,
            )  # fmt: skip
        self._pid = None
        (self.data_dir / PID_FILE).write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.kill()
            raise
        (self.data_dir / BOOTSTRAP_FILE).write_text(f"{self.bootstrap}\n")
        return self.bootstrap

    def _wait_ready(self, deadline: float) -> None:
        reason = "not probed yet"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka broker exited with code {self._proc.returncode} during startup "
                    f"({self.data_dir}).\n{self._log_tails()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"Kafka broker at {self.bootstrap} not ready before the deadline ({reason}).\n"
                    f"{self._log_tails()}"
                )
            try:  # cheap TCP check first; the wait doubles as the poll interval and exit detection
                with socket.create_connection(("127.0.0.1", self.port), timeout=min(1.0, remaining)):
                    pass
            except OSError as exc:
                reason = f"port closed: {exc}"
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=min(0.05, max(remaining, 0.001)))
                continue
            failure = _probe(self.bootstrap, min(5.0, max(remaining, 0.1)))
            if failure is None:
                return
            reason = failure

    def _log_tails(self) -> str:
        return (
            f"--- {self.stdout_log} (tail) ---\n{_tail_file(self.stdout_log, 20)}\n"
            f"--- {self.server_log} (tail) ---\n{_tail_file(self.server_log, 40)}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:  # leader of its own group (start_new_session)
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        if self._pid is None:
            return True
        return _wait_pid_gone(self._pid, self.is_running, timeout)

    def stop(self, timeout: float = 30) -> None:
        """Shut the broker down with SIGTERM; SIGKILL it if it is still alive after ``timeout`` s."""
        if self.is_running():
            self._signal(signal.SIGTERM)
            if not self._wait_exit(timeout):
                self._signal(signal.SIGKILL)
                self._wait_exit(10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown), e.g. to test crash recovery."""
        if self.is_running():
            self._signal(signal.SIGKILL)
            self._wait_exit(10)
        self._forget()

    def _forget(self) -> None:
        self._pid = None
        for name in (PID_FILE, BOOTSTRAP_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def restart(self, timeout: float = 60, *, hard: bool = False) -> str:
        """Stop (or with ``hard``, kill) and start again on the same data dir and ports."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"LocalKafka({str(self.data_dir)!r}, bootstrap={self.bootstrap!r}, {state})"


# --------------------------------------------------------------------------- topics


def create_topics(
    bootstrap: str, topics: Mapping[str, int], replication_factor: int = 1, timeout: float = 30
) -> None:
    """Create ``{name: partitions}`` topics (existing ones are left as they are) and wait until
    metadata shows every partition with a leader. Raises on any other creation error."""
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    if not topics:
        return
    ms = int(timeout * 1000)
    spec = {n: {"num_partitions": p, "replication_factor": replication_factor} for n, p in topics.items()}
    with KafkaAdminClient(
        bootstrap_servers=bootstrap, bootstrap_timeout_ms=ms, request_timeout_ms=ms
    ) as admin:
        result = admin.create_topics(spec, timeout_ms=ms, raise_errors=False)
        for topic in result["topics"]:
            err = for_code(topic["error_code"])
            if topic["error_code"] and err is not TopicAlreadyExistsError:
                raise err(f"creating topic {topic['name']!r}: {topic.get('error_message')}")
        admin.wait_for_topics(list(topics), timeout_ms=ms)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m raiwatch.dev.localkafka install|start|stop|status``; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m raiwatch.dev.localkafka", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_install = sub.add_parser("install", help="fetch the broker jars into the cache (once)")
    p_install.add_argument("--cache", type=Path, default=None, help=f"default {DEFAULT_CACHE_ROOT}")
    for name, help_ in (("start", "start a detached broker"), ("stop", "stop it"), ("status", "is it up")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help=f"default ./{DEFAULT_DATA_DIR}")
        p.add_argument("--timeout", type=float, default=60 if name == "start" else 30)
        if name == "start":
            p.add_argument("--port", type=int, default=DEFAULT_PORT)
            p.add_argument(
                "--controller-port", type=int, default=None,
                help="default: --port + 1, or a free port when that is taken",
            )  # fmt: skip
        else:  # accepted for symmetry with `start`; the pid file says which broker it is
            p.add_argument("--port", type=int, default=None, help="ignored: DIR/broker.pid decides")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "install":
            t0 = time.monotonic()
            libs = install(args.cache)
            print(f"{libs} ({len(list(libs.glob('*.jar')))} jars, {time.monotonic() - t0:.1f}s)")
            return 0
        running = LocalKafka.attach(args.data)
        if args.cmd == "status":
            if running is None:
                print(f"stopped ({Path(args.data).resolve()})")
                return 1
            failure = _probe(running.bootstrap, min(args.timeout, 5.0))
            print(f"running pid={running.pid} bootstrap={running.bootstrap} "
                  f"{'ready' if failure is None else 'not ready: ' + failure}")  # fmt: skip
            return 0
        if args.cmd == "stop":
            if running is None:
                print("not running")
                return 0
            pid = running.pid
            running.stop(args.timeout)
            print(f"stopped pid={pid}")
            return 0
        # start
        if running is not None:
            print(running.bootstrap)
            return 0
        t0 = time.monotonic()
        broker = LocalKafka(args.data, args.port, args.controller_port or _controller_port(args.port))
        bootstrap = broker.start(args.timeout)
        print(bootstrap)
        print(f"ready in {time.monotonic() - t0:.1f}s, pid {broker.pid}, logs {broker.server_log}",
              file=sys.stderr)  # fmt: skip
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
