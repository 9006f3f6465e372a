"""Drift is measured on the population of requests, not on how often one text is repeated.

A question gone viral (30 a minute for an hour, on a chat model of 5 prompts a second) moves the
prompt-length distribution for that hour: FeatureDrift and FeatureSlowShift paged on every viral
burst of the benchmark's clean week. Each window counts a text at most a few times beyond its
share of the reference, so the burst is not drift (the abuse monitor judges bursts of one text);
a real change of what users ask, many new texts, still is. Shipped rules, real rule engine.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from alert_rules import RuleEngine, load_rules
from alert_rules.loader import RULES_DIR
from monitors.drift import DriftMonitor, _Model
from monitors.registry import catalogue
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.columns import EventColumns
from raiwatch.dev import synth

WINDOW = 60
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
EVERYDAY = [
    "tell me a joke", "what should I cook tonight", "why is the sky blue", "write a poem about rain",
    "how do I tie a tie", "explain how compound interest works", "what is the capital of peru",
    "help me with my algebra homework", "suggest a name for my bakery", "recommend a fantasy book series",
]  # fmt: skip
_rng = random.Random(3)
# a new kind of user: 300 different requests over a vocabulary of 2,000 words of 3-12 letters
_VOCABULARY = [
    "".join(_rng.choice("abcdefghiklmnoprstuw") for _ in range(_rng.randint(3, 12))) for _ in range(2000)
]
LONGER = [" ".join(_rng.choice(_VOCABULARY) for _ in range(14)) for _ in range(300)]  # a new kind of user


def _chat(
    name: str, prompts: list[str], after_h: float, hours: float, benign: list | None = None
) -> list[bytes]:
    sc = synth.Scenario(
        name=name,
        seed=5,
        start=START + timedelta(hours=after_h),
        duration=f"{int(hours * 3600)}s",
        models=[synth.Model(id="chat", kind="llm", rate=5, prompts=prompts, accounts=4000)],
        benign=benign or [],
    )
    return [line for line, _ in synth.generate(sc)]


def _signals(lines: list[bytes], trim: bool = True) -> list:
    evs = sorted(telemetry_codec.decode_batch(lines).events, key=lambda e: (e.timestamp, e.event_id))
    mon = DriftMonitor(WINDOW)
    out: list = []
    opened: list[int] = []
    for i in range(0, len(evs), 1000):
        chunk = evs[i : i + 1000]
        starts = [int(e.timestamp.timestamp()) // WINDOW * WINDOW for e in chunk]
        mon.observe(EventColumns(chunk, starts))
        opened += [s for s in sorted(set(starts)) if s not in opened]
        while len(opened) > 1:
            if not trim and (st := mon._models.get("chat")) is not None and st.ref is not None:
                st.ref.texts = None  # what the monitor did before it trimmed repeats
            out += mon.close(opened.pop(0))
    return out


def _pages(signals: list) -> list[str]:
    rules = [r for r in load_rules(RULES_DIR, catalogue()) if r.name in ("FeatureDrift", "FeatureSlowShift")]
    engine = RuleEngine(rules, "file:///rb")
    return [
        f"{c.incident.rule} {c.incident.labels.get('feature')}"
        for c in engine.evaluate(signals)
        if c.kind == "opened"
    ]


NEWS = "what happened at the football final last night and who scored"
VIRAL = [
    synth.ViralPrompt(model="chat", prompt=NEWS, per_minute=30, new_share=0.4, start="2h", duration="1h")
]


def test_a_viral_question_is_not_drift():
    lines = _chat("viral", EVERYDAY, 0, 4, VIRAL)
    assert _pages(_signals(lines)) == []
    assert _pages(_signals(lines, trim=False)) != []  # the trap is real


def test_many_new_texts_are_still_drift():
    lines = _chat("before", EVERYDAY, 0, 2.5) + _chat("after", LONGER, 2.5, 1)
    pages = _pages(_signals(lines))
    assert any(p.startswith("FeatureDrift request.") for p in pages), pages


def test_the_reference_keeps_the_share_of_its_texts():
    mon = DriftMonitor(WINDOW)
    evs = telemetry_codec.decode_batch(_chat("ref", EVERYDAY, 0, 1.2)).events
    mon.observe(EventColumns(evs, [int(e.timestamp.timestamp()) // WINDOW * WINDOW for e in evs]))
    for start in sorted(mon._windows):
        mon.close(start)
    st: _Model = mon._models["chat"]
    assert st.ref is not None and st.ref.texts is not None
    assert len(st.ref.texts) == len(EVERYDAY) and abs(sum(st.ref.texts.values()) - 1) < 1e-9
