"""Hot reload of rule files in a running worker: a bad edit (a YAML bomb too) keeps the old rules
and says why; a good one takes over, by file watch or SIGHUP."""

from __future__ import annotations

import shutil
import signal
import uuid
from pathlib import Path

import pytest

from raiwatch.dev.localkafka import free_port
from tests.harness import poll, scrape, start_worker, stop_worker, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.kafka
def test_a_bad_edit_keeps_the_old_rules_and_a_good_one_is_taken(kafka_bootstrap, tmp_path: Path):
    rules = tmp_path / "rules"
    shutil.copytree(
        ROOT / "alert_rules", rules, ignore=shutil.ignore_patterns("*.py", "__pycache__", "tests")
    )
    run = uuid.uuid4().hex[:8]
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, f"rl-{run}", f"raiwatch-{run}",
                       extra=f"rules_dir: '{rules}'\nrules_watch_s: 0.3\n")  # fmt: skip
    port = free_port()
    log = tmp_path / "worker.log"
    worker = start_worker(cfg, tmp_path / "data", log, "--metrics-port", str(port))
    try:
        poll(lambda: "worker ready" in log.read_text(), 60, "the worker to start")
        assert scrape(port)["raiwatch_rules_last_reload_successful"] == 1
        abuse = rules / "abuse.yaml"
        good = abuse.read_text()
        abuse.write_text(good.replace("fire_when: value >= 10", "fire_when: valeu >= 10"))  # a typo
        poll(
            lambda: scrape(port).get('raiwatch_rule_reloads_total{outcome="failed"}') == 1,
            30,
            "the failed reload",
        )
        text = log.read_text()
        assert "rule reload failed, the previous rules keep running" in text and f"{abuse}:" in text
        assert scrape(port)["raiwatch_rules_last_reload_successful"] == 0 and worker.poll() is None
        abuse.write_text(good.replace("fire_when: value >= 10", "fire_when: value >= 12"))
        poll(
            lambda: scrape(port).get('raiwatch_rule_reloads_total{outcome="ok"}') == 1, 30, "the good reload"
        )
        assert scrape(port)["raiwatch_rules_last_reload_successful"] == 1
        worker.send_signal(signal.SIGHUP)  # an explicit reload, same rules
        poll(
            lambda: scrape(port).get('raiwatch_rule_reloads_total{outcome="ok"}') == 2,
            30,
            "the SIGHUP reload",
        )
        assert log.read_text().count("rules reloaded: 27 rules") == 2
        # a billion-laughs file: refused by the bounded loader on the watcher's thread, in no time
        levels = [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
        (rules / "bomb.yaml").write_text(
            "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "\n".join(levels) + "\n"
        )
        poll(
            lambda: scrape(port).get('raiwatch_rule_reloads_total{outcome="failed"}') == 2,
            30,
            "the bomb's refused reload",
        )
        assert (
            f"{rules / 'bomb.yaml'}:6: YAML refused: too large once aliases are expanded" in log.read_text()
        )
        assert scrape(port)["raiwatch_rules_last_reload_successful"] == 0 and worker.poll() is None
        assert log.read_text().count("rules reloaded: 27 rules") == 2  # the old rules still run
    finally:
        stop_worker(worker)
