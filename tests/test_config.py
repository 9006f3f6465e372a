"""Configuration: the documented example is the defaults; bad settings name themselves."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from monitors.registry import monitor_classes, monitor_configs
from raiwatch.core.config import Config, load_config
from raiwatch.core.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "raiwatch.example.yaml"


def test_the_example_file_is_exactly_the_defaults():
    example = load_config(EXAMPLE)
    assert msgspec.structs.replace(example, monitors={}) == Config()
    assert monitor_configs(example.monitors) == monitor_configs({})  # every family, every default
    assert set(example.monitors) == set(monitor_classes())  # and no family left out of the example


@pytest.mark.parametrize(
    ("sections", "phrase"),
    [
        ({"safty": {}}, "monitors.safty is no monitor family (did you mean 'safety'?)"),
        ({"safety": {"max_tenants": 0}}, "monitors.safety.max_tenants"),
        ({"safety": {"max_tennants": 5}}, "max_tennants"),
        ({"safety": 3}, "monitors.safety must be a mapping"),
    ],
)
def test_bad_monitor_settings_name_the_family_and_field(sections: dict, phrase: str):
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        monitor_configs(sections)


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RAIWATCH_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("RAIWATCH_CLICKHOUSE_DSN", "https://u:p@ch:8443")
    cfg = load_config(EXAMPLE, data_dir=str(tmp_path))
    assert cfg.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert cfg.clickhouse_dsn == "https://u:p@ch:8443"
    assert cfg.incident_db_url == f"sqlite:///{tmp_path / 'incidents.db'}"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("windows:\n  size_s: 0\n", "windows.size_s"),
        ("kafka:\n  partitions: many\n", "kafka.partitions"),
        ("clickhouse:\n  store_txt: true\n", "store_txt"),
        ("- just\n- a list\n", "must be a mapping"),
        ("kafka: [\n", "not valid YAML"),
    ],
)
def test_bad_settings_refuse_to_start_with_the_field_named(tmp_path: Path, text: str, phrase: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml") as err:
        load_config(path)
    assert phrase in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kafka:\n  bootstrap: x\n", "kafka.bootstrap: unknown setting; did you mean 'bootstrap_servers'?"),
        (
            "monitors:\n  safety:\n    max_tenant: 5\n",
            "monitors.safety.max_tenant: unknown setting; did you mean 'max_tenants'?",
        ),
        ("monitors:\n  safty: {}\n", "monitors.safty: unknown setting; did you mean 'safety'?"),
        (
            "notify:\n  routes:\n    - {name: a, type: webhook, url: 'http://x', tmeout_s: 3}\n",
            "notify.routes[0].tmeout_s: unknown setting; did you mean 'timeout_s'?",
        ),
        ("windows:\n  size_s: 0\n", "windows.size_s: bad setting: Expected `int` >= 1"),
    ],
)
def test_a_mistake_names_the_file_and_the_setting_path(tmp_path: Path, text: str, message: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    families = {"monitors": {family: cls.Config for family, cls in monitor_classes().items()}}
    with pytest.raises(ConfigError) as err:
        load_config(path, families)
    assert str(err.value) == f"{path}: {message}"


def test_a_config_that_is_a_folder_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    from raiwatch.cli import main

    with pytest.raises(
        ConfigError, match=f"config file {re.escape(str(tmp_path))} is a folder; give the YAML file"
    ):
        load_config(tmp_path)
    assert main(["incidents", "list", "--config", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"raiwatch: error: config file {tmp_path} is a folder; give the YAML file\n"
    )


ROUTE = "notify:\n  routes:\n    - {name: hook, type: webhook, url: 'https://ops:pw@hooks.example/in', %s}\n"
PLAIN = ROUTE % "timeout_s: 5"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (ROUTE % "match: {alertname: '~Safety['}",
         "notify.routes[0] (hook): match: alertname: bad regular expression 'Safety[': missing ]: ["),
        (ROUTE % "match: {team: '~(?=x)'}", "bad regular expression '(?=x)': invalid perl operator: (?="),
        (PLAIN.replace("https://ops:pw@", "ftp://"), "url must be http://HOST/... or https://HOST/..."),
        (PLAIN.replace("hooks.example", "hooks.example:99999"), "url must be http://HOST/..."),
        (ROUTE % "match: {}" + PLAIN.split("routes:\n")[1], "(hook): another route has this name"),
        (BOMB, "not valid YAML: line 6: refused: too large once aliases are expanded"),
    ],
)  # fmt: skip
def test_a_route_or_a_file_that_could_never_work_is_refused_in_one_line(
    tmp_path: Path, text: str, phrase: str
):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert phrase in str(err.value) and "\n" not in str(err.value)
    assert "pw" not in str(err.value)  # a route's URL, which may hold a password, is never repeated


def test_a_route_url_with_a_user_and_password_is_accepted(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(ROUTE % "match: {alertname: '~Safety.*'}")
    assert load_config(path).notify.routes[0].url == "https://ops:pw@hooks.example/in"  # sent as Basic auth
