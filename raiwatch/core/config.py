"""Configuration: one YAML file, every field with a default that runs on embedded engines.

``load_config(path)`` refuses a bad file with one line naming the file, the setting's path and the
problem (``cfg.yaml: kafka.bootstrap: unknown setting; did you mean 'bootstrap_servers'?``); the
environment overrides the few settings that differ per machine (``RAIWATCH_KAFKA_BOOTSTRAP``,
``RAIWATCH_CLICKHOUSE_DSN``, ``RAIWATCH_INCIDENT_DB``, ``RAIWATCH_DATA_DIR``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta, Struct, inspect

from raiwatch.core import yamlfile
from raiwatch.core.errors import ConfigError
from raiwatch.core.matchers import MatcherError, matchers

PosInt = Annotated[int, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]


class KafkaConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    bootstrap_servers: str = "127.0.0.1:19092"
    telemetry_topic: str = "ai.telemetry.v1"
    feedback_topic: str = "ai.feedback.v1"
    dlq_topic: str = "ai.telemetry.dlq.v1"
    group_id: str = "raiwatch"
    partitions: PosInt = 4
    replication_factor: PosInt = 1
    batch_size: PosInt = 5000  # most events handed to the pipeline at once
    batch_within_s: Annotated[float, Meta(gt=0)] = 0.5  # or fewer, after this long
    session_timeout_s: Annotated[float, Meta(ge=3)] = 30.0
    fetch_max_wait_ms: Annotated[int, Meta(ge=0)] = 50  # how long the broker may hold an empty fetch
    commit_interval_s: Annotated[float, Meta(gt=0)] = 1.0  # commit offsets, checkpoint, this often
    dlq_max_bytes: Annotated[int, Meta(ge=1024)] = 524_288  # larger dead-letter copies are truncated
    max_message_bytes: Annotated[int, Meta(ge=1024)] = 1_048_576  # the broker's limit (message.max.bytes)


class OtelConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """The OTLP source: the OpenTelemetry Collector's ``kafka`` exporter topics (raiwatch.core.otlp)."""

    spans_topic: str = ""  # "" = off; the exporter's default topic is otlp_spans
    logs_topic: str = ""  # gen_ai.evaluation.result events; "" = none (the exporter's default: otlp_logs)
    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"  # the exporter's `encoding`
    mapping: str = ""  # the mapping file (raiwatch otel lint); "" = the GenAI conventions' defaults
    telemetry_topic: bool = True  # also read kafka.telemetry_topic (telemetry-event.v1)
    max_held: PosInt = 200_000  # operations held in open windows for their evaluations
    max_early: PosInt = 50_000  # evaluations waiting for their operation


class IngestConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    max_future_s: NonNegFloat = 300.0  # reject events this far ahead of the worker's clock (0 = off)
    max_age_s: NonNegFloat = 30 * 86_400.0  # streaming: reject events older than this (0 = off)
    dedup_ids: PosInt = 200_000  # recent event ids remembered per partition to drop redeliveries


class WindowConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    size_s: PosInt = 60  # tumbling event-time window
    allowed_lateness_s: NonNegFloat = 30.0  # events later than this past the watermark are counted late
    idle_close_s: Annotated[float, Meta(gt=0)] = 5.0  # a caught-up partition this silent is idle
    # a partition's event time is the median of its last 2k-1 timestamps (k = this): fewer than k
    # of them, however far ahead, cannot move it; it trails the partition's newest by k-1 events
    watermark_confirm: PosInt = 16


class ClickHouseConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    dsn: str = ""  # "" = chdb:///<data_dir>/clickhouse ; or http(s)://host:port / chdb:///abs/path
    database: str = "raiwatch"
    cluster: str = ""  # render DDL with ON CLUSTER and Replicated engines when set
    events_ttl_days: PosInt = 30
    store_text: bool = False  # keep prompt/response text in raw events only when True
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 5.0  # server DSN: to open a connection
    timeout_s: Annotated[float, Meta(gt=0)] = 15.0  # server DSN: to send a request or hear any answer
    verify_tls: bool = True  # https DSN: check the server's certificate
    ca_cert: str = ""  # https DSN: CA bundle to check it with ("" = the system's)
    # embedded store: a worker serves it read-only over ClickHouse's HTTP interface, for
    # `raiwatch query` and any ClickHouse client while it holds the path (port 0: any free one)
    serve_http: bool = True
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    http_max_execution_time_s: Annotated[float, Meta(ge=0)] = 30.0  # per query served; 0 = none
    # per query served; 0 = none (clients read system.settings, about 2,000 rows, when they connect)
    http_max_result_rows: Annotated[int, Meta(ge=0)] = 1_000_000
    # rollups (signals_1m/1h/1d, events_1m/1h/1d): roll closed windows up this often (wall seconds);
    # 0 = at every window close. A replay and a worker's stop roll up the rest.
    rollups: bool = True
    rollup_every_s: NonNegFloat = 10.0


class RouteConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Where incidents go: one receiver, and which incidents it takes."""

    name: str
    type: Literal["alertmanager", "webhook", "slack", "pagerduty"]
    url: str  # alertmanager: its base URL; pagerduty: the Events API v2 enqueue URL
    severities: list[Literal["critical", "high", "warning", "info"]] = []  # [] = every severity
    match: dict[str, str] = {}  # incident label -> value, as rule match: v, !v, ~regex, !~regex
    secret_env: str = ""  # env var with the webhook's HMAC secret, or PagerDuty's routing key
    timeout_s: Annotated[float, Meta(gt=0)] = 5.0
    # Alertmanager's grouping: a problem's first page waits group_wait_s for the incidents that open
    # with it (they go in the same page); its later incidents go as one update at most every
    # group_interval_s
    group_wait_s: NonNegFloat = 30.0
    group_interval_s: NonNegFloat = 300.0


class NotifyConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    routes: list[RouteConfig] = []
    resend_s: Annotated[float, Meta(gt=0)] = 60.0  # Alertmanager: re-send firing alerts this often
    retry_min_s: Annotated[float, Meta(gt=0)] = 1.0  # first retry of a failed delivery; doubles after
    retry_max_s: Annotated[float, Meta(gt=0)] = 300.0  # up to this
    poll_s: Annotated[float, Meta(gt=0)] = 1.0  # how often the outbox is read
    resolve_delay_s: NonNegFloat = 0.0  # hold "resolved" back this long: a flap that reopens it stays quiet
    # problems (one page each): an incident joins the problem of the same group_by labels in which
    # an incident opened or resolved less than group_hold_s ago (alert_rules.grouping)
    group_by: list[str] = msgspec.field(default_factory=lambda: ["model_id"])
    group_hold_s: NonNegFloat = 1800.0


class MetricsConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """A worker's /metrics (Prometheus), /healthz and /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"  # /metrics has no auth; deploy/ sets 0.0.0.0 where Prometheus scrapes from afar
    port: Annotated[int, Meta(ge=0, le=65535)] = 9464  # 0: any free port (logged)


class Config(Struct, forbid_unknown_fields=True, kw_only=True):
    data_dir: str = "var"
    rules_dir: str = ""  # "" = the rules shipped in alert_rules/
    runbook_base_url: str = ""  # where runbooks are served (wiki, git host); "" = file:// of the shipped ones
    rules_watch_s: NonNegFloat = (
        5.0  # a worker re-reads its rule files when they change (checked this often; 0 = off)
    )
    incident_db: str = ""  # SQLAlchemy URL; "" = sqlite:///<data_dir>/incidents.db
    queries_dir: str = ""  # a folder of one's own saved queries (NAME.sql) for `raiwatch query --saved`
    # expected false alarms per model and week over every threshold and change test the shipped
    # rules use, split among them (monitors.registry.budgets)
    false_alarms_per_model_week: Annotated[float, Meta(gt=0)] = 1.0
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    windows: WindowConfig = msgspec.field(default_factory=WindowConfig)
    clickhouse: ClickHouseConfig = msgspec.field(default_factory=ClickHouseConfig)
    notify: NotifyConfig = msgspec.field(default_factory=NotifyConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    otel: OtelConfig = msgspec.field(default_factory=OtelConfig)
    # per monitor family, its own settings (validated by monitors.registry against each monitor's Config)
    monitors: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{self.data_path / 'clickhouse'}"

    @property
    def incident_db_url(self) -> str:
        return self.incident_db or f"sqlite:///{self.data_path / 'incidents.db'}"


_ENV = {
    "RAIWATCH_DATA_DIR": ("data_dir",),
    "RAIWATCH_KAFKA_BOOTSTRAP": ("kafka", "bootstrap_servers"),
    "RAIWATCH_CLICKHOUSE_DSN": ("clickhouse", "dsn"),
    "RAIWATCH_INCIDENT_DB": ("incident_db",),
    "RAIWATCH_RULES_DIR": ("rules_dir",),
}


def load_config(
    path: str | os.PathLike | None = None,
    sections: Mapping[str, Mapping[str, type]] | None = None,
    **overrides: object,
) -> Config:
    """Read ``path`` (YAML) or the defaults, apply environment and keyword overrides, validate.

    ``sections``: settings kept as plain mappings (``monitors``) checked too, each of their keys
    against its own struct (``{"monitors": {"safety": SafetyConfig, ...}}``), so that a mistake
    there is named like any other.
    """
    raw: dict = {}
    if path is not None:
        p = Path(path)
        try:
            raw = yamlfile.load_file(p) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {p} is a folder; give the YAML file") from None
        except OSError as e:
            raise ConfigError(f"config file {p}: cannot read it ({e.strerror or e})") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            why = yamlfile.describe(e) if isinstance(e, yaml.YAMLError) else e
            raise ConfigError(f"{p}: not valid YAML: {why}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of settings")
    for var, keys in _ENV.items():
        if var in os.environ:
            node = raw
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = os.environ[var]
    for key, val in overrides.items():
        if val is not None:
            raw[key] = val
    where = f"{path}: " if path else ""
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(where + explain(e, Config)) from None
    for name, classes in (sections or {}).items():
        for key, value in getattr(cfg, name).items():
            at = f"{name}.{key}"
            if key not in classes:
                raise ConfigError(where + _unknown(at, key, list(classes)))
            try:
                msgspec.convert(value or {}, classes[key], strict=False)
            except msgspec.ValidationError as e:
                raise ConfigError(where + explain(e, classes[key], at)) from None
    _check_routes(cfg.notify.routes, where)
    return cfg


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$(?P<at>[^`]*)`)?")
_REASON = re.compile(r"(?P<reason>.*?)(?: - at `\$(?P<at>[^`]*)`)?", re.S)


def explain(err: msgspec.ValidationError, root: type, prefix: str = "") -> str:
    """msgspec's validation error as ``PATH: unknown setting; did you mean 'x'?`` or ``PATH: bad
    setting: REASON``, PATH written from ``prefix`` (where ``root`` sits in the file) down."""
    text = str(err)
    unknown = _UNKNOWN.fullmatch(text)
    if unknown:
        at = unknown["at"] or ""
        return _unknown(_path(prefix, at, unknown["key"]), unknown["key"], _fields_at(root, at))
    m = _REASON.fullmatch(text)
    assert m is not None  # the pattern matches any text
    return f"{_path(prefix, m['at'] or '') or 'the top level'}: bad setting: {m['reason']}"


def _unknown(path: str, key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"{path}: unknown setting; did you mean {close[0]!r}?"
    return f"{path}: unknown setting" + (f" (known: {', '.join(known)})" if known else "")


def _path(prefix: str, at: str, key: str = "") -> str:
    """``monitors.safety`` + ``.routes[0]`` + ``foo`` -> ``monitors.safety.routes[0].foo``."""
    text = prefix + at + (f".{key}" if key else "")
    return text.lstrip(".")


def _fields_at(root: type, at: str) -> list[str]:
    """The setting names of the struct at ``at`` (msgspec's ``.a.b[0]`` form) under ``root``."""
    t: Any = inspect.type_info(root)
    for name, _index in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", at):
        t = _unwrap(t)
        if name and isinstance(t, inspect.StructType):
            t = next((f.type for f in t.fields if f.encode_name == name), None)
        elif isinstance(t, inspect.ListType | inspect.SetType | inspect.VarTupleType):
            t = t.item_type
        elif isinstance(t, inspect.DictType):
            t = t.value_type
        else:
            return []
    t = _unwrap(t)
    return [f.encode_name for f in t.fields] if isinstance(t, inspect.StructType) else []


def _unwrap(t: Any) -> Any:
    while isinstance(t, inspect.Metadata):
        t = t.type
    if isinstance(t, inspect.UnionType):
        return next((x for x in t.types if isinstance(_unwrap(x), inspect.StructType)), t)
    return t


def _check_routes(routes: list[RouteConfig], where: str) -> None:
    """Refuse a route that could never deliver: a regex its matcher cannot compile, a URL that is
    no http(s) URL with a host, a name used twice (the messages never repeat a URL: it may hold a
    token)."""
    seen = set()
    for i, r in enumerate(routes):
        at = f"{where}bad setting: notify.routes[{i}] ({r.name})"
        if r.name in seen:
            raise ConfigError(f"{at}: another route has this name")
        seen.add(r.name)
        try:
            matchers(r.match)
        except MatcherError as e:
            raise ConfigError(f"{at}: match: {e}") from None
        try:
            parts = urlsplit(r.url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port that is no number, or out of range
            ok = False
        if not ok:
            raise ConfigError(f"{at}: url must be http://HOST/... or https://HOST/...")
