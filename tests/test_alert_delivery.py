"""Alert delivery: a real Prometheus Alertmanager, a local receiver for webhooks, Slack and
PagerDuty, and the outbox across a receiver outage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import msgspec
import pytest

from raiwatch.core.config import NotifyConfig, RouteConfig
from raiwatch.core.records import Incident, IncidentChange
from raiwatch.delivery import Delivery, router
from raiwatch.dev.localkafka import free_port
from storage.incidents import IncidentStore
from tests.harness import poll

NOW = datetime.now(UTC).replace(microsecond=0)


def _incident(n: int = 1, severity: str = "critical", status: str = "open", **labels: str) -> Incident:
    return Incident(
        incident_id=f"inc-{n:04d}", dedup_key=f"k{n}", rule="SafetyRegressionCritical",
        signal="safety.rate_change", severity=severity, status=status, opened_at=NOW - timedelta(minutes=3),
        resolved_at=NOW if status == "resolved" else None,
        labels={"model_id": "bot", "category": "self_harm", "team": "trust-safety", **labels},
        summary="bot: self_harm violations rose to 10%-13% (n=1433) from a baseline of 0.5%",
        runbook_url="https://runbooks.example/safety-regression.md", value=1.2, threshold=1.0,
    )  # fmt: skip


class Receiver:
    """A local HTTP receiver that records what it is sent; ``down`` refuses with 503, ``echo``
    refuses with 400 and echoes the request line, headers and body (the worst a receiver can do
    with secrets), ``hang`` holds every request until it is set."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict, bytes]] = []
        self.down = False
        self.echo = False
        self.hang: threading.Event | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.hang is not None:
                    outer.hang.wait(30)
                if outer.down or outer.echo:
                    self.send_response(400 if outer.echo else 503)
                    self.end_headers()
                    said = f"{self.path} {dict(self.headers)} ".encode() + body if outer.echo else b""
                    self.wfile.write(said or b"receiver down for maintenance")
                    return
                outer.got.append((self.path, dict(self.headers), body))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory) -> Iterator[str]:
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert exe, "prometheus-alertmanager is not installed (deploy/system-deps.sh installs it)"
    base = tmp_path_factory.mktemp("alertmanager")
    conf = base / "alertmanager.yml"
    conf.write_text("route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n")
    port = free_port()
    proc = subprocess.Popen(
        [exe, f"--config.file={conf}", f"--storage.path={base / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(base / "log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        poll(ready, 30, "Alertmanager to be ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as r:
        return json.loads(r.read())


def _store(tmp_path: Path) -> IncidentStore:
    return IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")


def test_an_incident_reaches_alertmanager_with_its_runbook_and_resolves_there(
    alertmanager: str, tmp_path: Path
):
    cfg = NotifyConfig(routes=[RouteConfig(name="am", type="alertmanager", url=alertmanager)], resend_s=30)
    store = _store(tmp_path)
    delivery = Delivery(store, cfg)
    store.apply([IncidentChange(kind="opened", incident=_incident())], router(cfg))
    assert delivery.run_once() >= 1

    def firing() -> dict | None:
        mine = [
            a for a in _alerts(alertmanager) if a["labels"].get("alertname") == "SafetyRegressionCritical"
        ]
        return mine[0] if mine and mine[0]["status"]["state"] == "active" else None

    alert = poll(firing, 20, "the alert in Alertmanager")
    labels = {"model_id": "bot", "category": "self_harm", "team": "trust-safety"}
    assert alert["labels"] == {"alertname": "SafetyRegressionCritical", "severity": "critical", **labels}
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example/safety-regression.md"
    assert alert["annotations"]["incident_id"] == "inc-0001"
    assert "model_id=bot" in alert["annotations"]["scope"] and "from " in alert["annotations"]["scope"]
    assert datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")) > datetime.now(UTC)  # kept firing
    [row] = store.notifications("inc-0001")
    assert row["delivered_at"] is not None and row["attempts"] == 1

    store.apply([IncidentChange(kind="resolved", incident=_incident(status="resolved"))], router(cfg))
    delivery.run_once()
    poll(lambda: firing() is None, 20, "the alert to resolve in Alertmanager")
    assert [n["kind"] for n in store.notifications("inc-0001")] == ["opened", "resolved"]


def test_a_receiver_down_gets_every_notification_once_it_is_back(
    receiver: Receiver, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    hook = RouteConfig(name="hook", type="webhook", url=f"{receiver.url}/hook", secret_env="HOOK_SECRET")
    cfg = NotifyConfig(routes=[hook], retry_min_s=0.05, retry_max_s=0.2)
    store = _store(tmp_path)
    clock = [time.time()]
    delivery = Delivery(store, cfg, wall=lambda: clock[0])

    def a_round_later() -> int:  # the retry delays pass on this clock, not by sleeping
        clock[0] += 1.0
        return delivery.run_once()

    receiver.down = True
    t0 = time.monotonic()
    store.apply([IncidentChange(kind="opened", incident=_incident(n)) for n in range(1, 6)], router(cfg))
    assert time.monotonic() - t0 < 2  # the pipeline's write does not wait for any receiver
    for _ in range(3):
        assert a_round_later() == 0
    pending = store.notifications()
    assert len(pending) == 5 and all(n["delivered_at"] is None and n["attempts"] == 3 for n in pending)
    assert "answered 503" in pending[0]["last_error"] and store.outbox_depth() == 5
    receiver.down = False
    assert a_round_later() == 5 and store.outbox_depth() == 0
    assert a_round_later() == 0  # delivered ones are not sent again
    ids = sorted(json.loads(body)["incident_id"] for _, _, body in receiver.got)
    assert ids == [f"inc-{n:04d}" for n in range(1, 6)]  # each once
    for _, headers, body in receiver.got:
        want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Raiwatch-Signature"] == want and headers["X-Raiwatch-Event"] == "opened"
        assert set(json.loads(body)) >= {
            "incident_id",
            "rule",
            "severity",
            "labels",
            "summary",
            "runbook_url",
        }


def test_routes_by_severity_and_labels_with_slack_and_pagerduty_formats(receiver: Receiver, tmp_path: Path,
                                                                        monkeypatch):  # fmt: skip
    monkeypatch.setenv("PD_KEY", "routing-key-1")
    cfg = NotifyConfig(routes=[
        RouteConfig(name="pager", type="pagerduty", url=receiver.url + "/pd", severities=["critical"],
                    secret_env="PD_KEY"),
        RouteConfig(name="chat", type="slack", url=receiver.url + "/slack", match={"team": "!trust-safety"}),
    ])  # fmt: skip
    store = _store(tmp_path)
    store.apply([
        IncidentChange(kind="opened", incident=_incident(1)),  # critical, trust-safety: pager only
        IncidentChange(kind="opened", incident=_incident(2, "warning", team="ml-platform")),  # chat only
    ], router(cfg))  # fmt: skip
    Delivery(store, cfg).run_once()
    store.acknowledge("inc-0001", actor="bob", routes=router(cfg))  # on-call acks: PagerDuty hears it
    Delivery(store, cfg).run_once()
    store.apply([IncidentChange(kind="resolved", incident=_incident(1, status="resolved"))], router(cfg))
    Delivery(store, cfg).run_once()
    sent = [(path, json.loads(body)) for path, _, body in receiver.got]
    assert [p for p, _ in sent] == ["/pd", "/slack", "/pd", "/pd"]
    trigger, slack, ack, resolve = (b for _, b in sent)
    assert [trigger["event_action"], ack["event_action"], resolve["event_action"]] == [
        "trigger",
        "acknowledge",
        "resolve",
    ]
    assert ack["dedup_key"] == "k1"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "k1" and trigger["routing_key"] == "routing-key-1"
    assert trigger["payload"]["severity"] == "critical" and trigger["links"][0]["href"].endswith(
        "safety-regression.md"
    )
    assert slack["text"].startswith("[WARNING] SafetyRegressionCritical:") and "Runbook" in json.dumps(
        slack["blocks"]
    )


@pytest.mark.kafka
def test_a_streaming_worker_pages_alertmanager_for_a_spike(
    kafka_bootstrap, alertmanager: str, tmp_path: Path
):
    import uuid

    from kafka import KafkaProducer

    from raiwatch.dev import synth
    from tests.harness import start_worker, stop_worker, wait_drained, write_config

    events = tmp_path / "events.jsonl"
    n = 9000
    synth.write(events, synth.default_scenario(n, seed=31, rate_per_s=15, start=synth.recent_start(n, 15)))
    run = uuid.uuid4().hex[:8]
    topic, group = f"am-{run}", f"raiwatch-{run}"
    notify = (
        f"notify:\n  routes:\n    - {{name: am, type: alertmanager, url: '{alertmanager}'}}\n  poll_s: 0.2\n"
    )
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic, group, extra=notify)
    log = tmp_path / "worker.log"
    worker = start_worker(cfg, tmp_path / "data", log)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for line in events.read_bytes().splitlines():
            producer.send(topic, value=line)
        producer.flush()
        producer.close()
        wait_drained(kafka_bootstrap, group, topic, worker, log)

        def paged() -> list[dict]:
            return [a for a in _alerts(alertmanager) if a["labels"].get("model_id") == "helpdesk-assistant"
                    and a["labels"].get("alertname") == "SafetyRegressionCritical"]  # fmt: skip

        (alert,) = poll(paged, 30, "the worker's alert in Alertmanager")
    finally:
        stop_worker(worker)
    assert alert["labels"]["category"] == "self_harm"
    assert alert["annotations"]["runbook_url"].endswith("safety-regression.md")
    store = IncidentStore(f"sqlite:///{tmp_path / 'data' / 'incidents.db'}")
    (inc,) = [i for i in store.list() if i.rule == "SafetyRegressionCritical"]
    first = store.notifications(inc.incident_id)[0]
    # the first page of its problem on the model, or an update of it (an earlier incident on the
    # model may have started the problem)
    expected = "opened" if inc.group_id == inc.incident_id else "grouped"
    assert (first["route"], first["kind"], first["delivered_at"] is not None) == ("am", expected, True)


def test_a_silence_holds_notifications_back_and_says_so_on_the_incident(receiver: Receiver, tmp_path: Path):
    cfg = NotifyConfig(routes=[RouteConfig(name="hook", type="webhook", url=f"{receiver.url}/hook")])
    store = _store(tmp_path)
    clock = [time.time()]
    delivery = Delivery(store, cfg, wall=lambda: clock[0])
    now = datetime.fromtimestamp(clock[0], UTC)
    sil = store.add_silence({"alertname": "~Safety.*", "model_id": "bot", "team": "!ml-platform"}, now,
                            now + timedelta(hours=1), "alice", "red-team exercise on bot")  # fmt: skip
    store.apply([IncidentChange(kind="opened", incident=_incident(1)),
                 IncidentChange(kind="opened", incident=_incident(2, team="ml-platform")),
                 IncidentChange(kind="opened", incident=_incident(3))], router(cfg))  # fmt: skip
    clock[0] += 1.0  # just after the changes were queued
    assert delivery.run_once() == 1  # incident 2's team is excluded from the silence
    assert [json.loads(b)["incident_id"] for _, _, b in receiver.got] == ["inc-0002"]
    (held,) = store.notifications("inc-0001")
    assert held["delivered_at"] is None and held["attempts"] == 0
    assert held["last_error"].startswith(
        f"silenced by {sil['silence_id']} (alice: red-team exercise on bot) until"
    )
    # incident 1 resolves while silenced: neither its opening nor its resolution is ever sent
    store.apply([IncidentChange(kind="resolved", incident=_incident(1, status="resolved"))], router(cfg))
    store.expire_silence(sil["silence_id"][:8], at=now + timedelta(minutes=10))
    clock[0] += 11 * 60
    assert delivery.run_once() == 1  # incident 3, still open, is sent once the silence ends
    assert [json.loads(b)["incident_id"] for _, _, b in receiver.got] == ["inc-0002", "inc-0003"]
    notes = {(n["incident_id"], n["kind"]): n["last_error"] for n in store.notifications()}
    assert notes["inc-0001", "opened"] == "not sent: resolved while silenced"
    assert notes["inc-0001", "resolved"] == "not sent: its opening was not sent"
    assert store.outbox_depth() == 0


def test_silences_on_the_command_line(tmp_path: Path):
    from storage.incidents import migrate
    from tests.harness import cli

    data = ["--data-dir", str(tmp_path)]
    migrate(f"sqlite:///{tmp_path / 'incidents.db'}")  # silences need a store: none is made by accident
    p = cli("silences", "add", "--match", "model_id=bot", "--match", "alertname=~Safety.*", "--for", "2h",
            "--author", "alice", "--comment", "red-team exercise", *data)  # fmt: skip
    assert p.returncode == 0, p.stderr
    sid = p.stdout.split(":")[0]
    assert sid.startswith("sil-") and "{'model_id': 'bot', 'alertname': '~Safety.*'}" in p.stdout
    assert sid in cli("silences", "list", *data).stdout
    assert cli("silences", "expire", sid[:9], *data).returncode == 0
    assert (
        sid not in cli("silences", "list", *data).stdout
        and sid in cli("silences", "list", "--all", *data).stdout
    )
    bad = cli(
        "silences", "add", "--match", "model_id", "--for", "1h", "--author", "a", "--comment", "c", *data
    )
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "write LABEL=VALUE (VALUE may be !v, ~regex or !~regex)"
    )
    nowhy = cli(
        "silences", "add", "--match", "model_id=bot", "--for", "1h", "--author", "a", "--comment", "", *data
    )
    assert nowhy.returncode == 2 and "needs an author and a comment" in nowhy.stderr


def test_a_flap_is_not_paged_twice_when_resolutions_are_held_back(receiver: Receiver, tmp_path: Path):
    cfg = NotifyConfig(routes=[RouteConfig(name="hook", type="webhook", url=f"{receiver.url}/hook")],
                       resolve_delay_s=600)  # fmt: skip
    store = _store(tmp_path)
    clock = [time.time() + 1]
    delivery = Delivery(store, cfg, wall=lambda: clock[0])
    store.apply([IncidentChange(kind="opened", incident=_incident(1))], router(cfg))
    assert delivery.run_once() == 1
    resolved_now = datetime.fromtimestamp(clock[0], UTC)  # NOW is the import time: long ago under xdist
    resolved = msgspec.structs.replace(_incident(1, status="resolved"), resolved_at=resolved_now)
    store.apply([IncidentChange(kind="resolved", incident=resolved)], router(cfg))
    assert delivery.run_once() == 0  # held back: a flap may reopen it
    reopened = msgspec.structs.replace(_incident(1), updated_at=NOW + timedelta(minutes=2))
    (inc,) = store.apply([IncidentChange(kind="reopened", incident=reopened)], router(cfg))
    assert (inc.incident_id, inc.status, inc.resolved_at) == ("inc-0001", "open", None)
    clock[0] += 601
    assert delivery.run_once() == 0 and len(receiver.got) == 1  # one page for the whole flap
    notes = {n["kind"]: n["last_error"] for n in store.notifications("inc-0001")}
    assert notes == {"opened": None, "resolved": "not sent: the incident reopened (flap control)"}


def test_a_broken_silence_in_the_store_holds_nothing_back_and_the_pages_go_out(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
):
    from raiwatch.cli import main
    from storage.incidents.models import SilenceRow

    cfg = NotifyConfig(routes=[RouteConfig(name="hook", type="webhook", url=f"{receiver.url}/hook")])
    store = _store(tmp_path)
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match=r"silence matcher alertname: bad regular expression 'Safety\['"):
        store.add_silence({"alertname": "~Safety["}, now, now + timedelta(hours=2), "eve", "typo")
    assert main(["silences", "add", "--match", "alertname=~Safety[", "--for", "2h", "--author", "eve",
                 "--comment", "typo", "--data-dir", str(tmp_path)]) == 2  # fmt: skip
    assert capsys.readouterr().err == (
        "raiwatch: error: silence matcher alertname: bad regular expression 'Safety[': missing ]: [\n"
    )
    # one stored before matchers were checked, as a tester made it: it must not mute every page
    with store._sessions.begin() as s:
        s.add(SilenceRow(silence_id="sil-broken", matchers={"alertname": "~Safety["}, starts_at=now,
                         ends_at=now + timedelta(hours=2), author="eve", comment="typo",
                         created_at=now))  # fmt: skip
    store.add_silence({"model_id": "quiet-bot"}, now, now + timedelta(hours=2), "alice", "known issue")
    store.apply([IncidentChange(kind="opened", incident=_incident(n, model_id=m))
                 for n, m in ((1, "bot"), (2, "quiet-bot"), (3, "bot"))], router(cfg))  # fmt: skip
    delivery = Delivery(store, cfg, wall=lambda: time.time() + 1)
    with caplog.at_level("ERROR", logger="raiwatch.delivery"):
        assert delivery.run_once() == 2 and delivery.run_once() == 0
    assert sorted(json.loads(b)["incident_id"] for _, _, b in receiver.got) == ["inc-0001", "inc-0003"]
    (said,) = [r.getMessage() for r in caplog.records]  # once, not once per round
    assert said.startswith("silence sil-broken holds nothing back: its matcher alertname: bad regular")


def test_no_receiver_secret_reaches_a_log_an_error_incidents_show_or_a_metric(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    from prometheus_client import generate_latest

    from tests.harness import cli

    host = receiver.url.removeprefix("http://")
    slack_token, password, routing_key, hmac_key = (
        "XyZ9slackTOKEN4242",
        "s3cr3t-pw:x",
        "R0UTINGKEY77",
        "HMACkey55",
    )
    monkeypatch.setenv("PD_KEY", routing_key)
    monkeypatch.setenv("HOOK_KEY", hmac_key)
    routes = [
        RouteConfig(
            name="slack", type="slack", url=f"{receiver.url}/services/T01ABCDEF/B02GHIJKL/{slack_token}"
        ),
        RouteConfig(name="basic", type="webhook", url=f"http://ops:{quote(password, safe='')}@{host}/hook"),
        RouteConfig(name="pd", type="pagerduty", url=f"{receiver.url}/v2/enqueue", secret_env="PD_KEY"),
        RouteConfig(name="signed", type="webhook", url=f"{receiver.url}/signed", secret_env="HOOK_KEY"),
    ]
    cfg = NotifyConfig(routes=routes)
    store = _store(tmp_path)
    store.apply([IncidentChange(kind="opened", incident=_incident())], router(cfg))
    receiver.echo = True  # every receiver answers 400, echoing what it was sent
    delivery = Delivery(store, cfg, wall=lambda: time.time() + 1)
    with caplog.at_level("DEBUG"):
        assert delivery.run_once() == 0
    secrets = [slack_token, password, quote(password, safe=""), routing_key, hmac_key,
               base64.b64encode(f"ops:{password}".encode()).decode()]  # fmt: skip
    errors = {n["route"]: n["last_error"] for n in store.notifications()}
    assert errors["slack"].startswith(f"{receiver.url}/***: answered 400 Bad Request: /***")
    assert errors["basic"].startswith(f"http://ops:***@{host}/***: answered 400")
    assert "Authorization': 'Basic ***'" in errors["basic"]
    shown = cli("incidents", "show", "inc-0001", "--data-dir", str(tmp_path)).stdout
    assert shown.count("answered 400 Bad Request") == 4
    texts = {"log": caplog.text, "errors": str(errors), "show": shown, "metrics": generate_latest().decode()}
    for where, text in texts.items():
        assert not [x for x in secrets if x in text], where

    # a URL with a user and password delivers, as HTTP Basic authentication
    receiver.echo = False
    assert Delivery(store, cfg, wall=lambda: time.time() + 600).run_once() == 4
    got = {path: headers for path, headers, _ in receiver.got}
    assert got["/hook"]["Authorization"] == "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
    assert "Authorization" not in got["/signed"] and got["/signed"]["X-Raiwatch-Signature"].startswith(
        "sha256="
    )


def test_a_hanging_receiver_delays_only_its_own_route(receiver: Receiver, tmp_path: Path):
    hung = Receiver()
    hung.hang = threading.Event()
    try:
        cfg = NotifyConfig(routes=[
            RouteConfig(name="hung", type="webhook", url=f"{hung.url}/hook", timeout_s=20),
            RouteConfig(name="ok", type="webhook", url=f"{receiver.url}/hook"),
        ], poll_s=0.2)  # fmt: skip
        store = _store(tmp_path)
        delivery = Delivery(store, cfg)
        delivery.start()
        t0 = time.monotonic()
        store.apply([IncidentChange(kind="opened", incident=_incident(n)) for n in (1, 2)], router(cfg))
        delivery.wake()
        poll(lambda: len(receiver.got) == 2, 10, "the healthy receiver's pages")
        took = time.monotonic() - t0
        assert took < 5, took  # not after the hung receiver's 20 s timeout
        assert hung.got == [] and store.outbox_depth() == 2  # the hung route's two still wait
        hung.hang.set()  # it answers: its route catches up by itself
        poll(lambda: store.outbox_depth() == 0, 30, "the hung route to catch up")
        assert len(hung.got) == 2
    finally:
        hung.hang.set()
        delivery.stop()
        hung.close()
