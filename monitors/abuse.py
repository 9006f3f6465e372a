"""Coordinated abuse: many new accounts sending near-identical prompts, and accounts far above peers.

**Clusters.** Each window, a model's prompts (``request.text``) are taken in event-id order and
put in clusters of near-duplicates: a prompt's word set is MinHashed (datasketch, ``num_perm``
permutations) and looked up in an LSH index; it joins the cluster of an indexed prompt whose
estimated Jaccard similarity is at least ``similarity`` (the lowest cluster id among several),
or starts a cluster of its own. A paraphrase shares about a third of its words with another
paraphrase of the same template, so chains of them end up in one cluster; exact repeats cost a
dictionary lookup. Up to ``members_per_cluster`` distinct variants of a cluster are indexed.
Hash-only telemetry (``request.text`` a hex digest of the prompt, 16 to 128 characters) can
only cluster exact repeats: such a model's signals say ``mode: exact`` instead of ``near``.

**Campaigns.** Over the last ``horizon_s`` a cluster has ``n`` prompts from some accounts, of
which some are *new*: first seen by this model less than ``new_account_s`` ago, and after its
first ``warmup_s`` (before that, every account is new to the monitor). Benign repetition — many
established users asking the same common question — is filtered out before a signal is made: a
cluster is reported only when more than ``min_new_share`` of its accounts in the horizon are new
(at the share's one-sided 95% Wilson bound: a campaign's accounts are nearly all new, a viral
question's crowd is not), or more than half while its new accounts send ``min_new_repeats``
prompts each (a few accounts sending a template again and again),
and its prompts were rare before (the cluster was first seen less than ``rare_s`` ago, after the
model's warmup: the texts of its first hour are its established traffic) or at least
``min_violation_share`` of them were flagged by the safety classifier. The test is made every
window: a reported cluster that no longer passes it reads 0 new accounts.

Signals (per model; ``n`` = the model's prompts over the horizon, the population the cluster
was found in):

- ``abuse.campaign`` {cluster, mode}: distinct new accounts in the cluster over the horizon
  (value), against its distinct accounts (baseline), so ``ratio`` is the new-account share;
  ``lower``/``upper``: Wilson 95% interval of the share of its prompts flagged by safety. Once
  reported, a cluster has a row every window until it has been quiet for a whole horizon (the
  last one with value 0), so rules can resolve; its value is 0 in the windows it does not pass
  the campaign test (a common cluster that once looked like a campaign does not page again and
  again as newcomers keep asking it). Its record and prompts go to the
  ``abuse_clusters`` and ``abuse_cluster_members`` tables (``drain_rows``).
- ``abuse.account_rate`` {user_id}: an account's prompts over the horizon (value) against the
  larger of its peers' 99th percentile and its own rate over the ``new_account_s`` before
  (baseline), for accounts at least ``account_factor`` times above it and with at least
  ``account_min`` prompts: a burst, not a steady heavy user; a handful of rows at most.

Memory per model is bounded: ``max_accounts`` accounts (least recently seen forgotten, which
makes them new again), ``max_clusters`` clusters with their indexed variants, ``max_texts``
exact texts, and ``horizon_s`` of per-window counts.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections import Counter, OrderedDict, deque
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from detectors.evidence import look_alpha, rate_bounds
from detectors.rates import wilson_interval
from monitors.base import MonitorConfig, PerModelState
from monitors.registry import register
from raiwatch.core.catalogue import SignalSpec
from raiwatch.core.columns import EventColumns
from raiwatch.core.records import Signal, TelemetryEvent

STATE_VERSION = 1
DIGEST = "\x00"  # marks a prompt that came as a digest (no real text starts with NUL)
HASHED = re.compile(r"[0-9a-f]{16,128}")  # a prompt sent as a digest only: exact repeats alone can match
SEED = 1  # MinHash seed: fixed, so a restored index matches the one that was saved
_PROBE = MinHash(num_perm=16, seed=SEED)
SCHEME, DTYPE = _PROBE.scheme, _PROBE.hashvalues.dtype  # of this datasketch's MinHash, for restores


class AbuseConfig(MonitorConfig):
    """``monitors.abuse`` in the config file."""

    horizon_s: Annotated[int, msgspec.Meta(gt=0)] = 600  # a campaign is measured over this span
    new_account_s: Annotated[int, msgspec.Meta(gt=0)] = 3600  # first seen less than this ago: new
    warmup_s: Annotated[int, msgspec.Meta(ge=0)] = 3600  # no account is new in a model's first hour
    rare_s: Annotated[int, msgspec.Meta(ge=0)] = 7200  # a cluster younger than this is rare text
    # of a cluster's accounts, with 95% confidence (Wilson): a campaign's accounts are nearly all new; a
    # viral question's were 54-75% new on the benchmark's clean week (newcomers, accounts seen rarely)
    min_new_share: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.85
    # ... or more than half new (same bound) with the new accounts sending this many prompts each
    min_new_repeats: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    min_violation_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1  # flagged prompts
    # what the flagged-share test may cost a model a week in clusters of old text wrongly passed: the
    # lower bound of the share, not the estimate, must be above min_violation_share. Abuse rules
    # compare counts and stay outside the split of false_alarms_per_model_week (monitors.registry)
    flagged_false_alarms_per_week: Annotated[float, msgspec.Meta(gt=0)] = 0.2
    min_new_accounts: Annotated[int, msgspec.Meta(ge=1)] = 3  # fewer: no signal row at all
    similarity: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.3  # Jaccard of word sets
    num_perm: Annotated[int, msgspec.Meta(ge=16, le=512)] = 64
    members_per_cluster: Annotated[int, msgspec.Meta(ge=1)] = 20  # variants indexed per cluster
    max_clusters: Annotated[int, msgspec.Meta(ge=10)] = 5000  # per model
    max_texts: Annotated[int, msgspec.Meta(ge=100)] = 50_000  # exact texts remembered per model
    max_accounts: Annotated[int, msgspec.Meta(ge=100)] = 50_000  # per model
    account_factor: Annotated[float, msgspec.Meta(gt=1)] = 10.0  # x peers' p99 and its own past rate
    account_min: Annotated[int, msgspec.Meta(ge=1)] = 30  # prompts in the horizon
    sample_chars: Annotated[int, msgspec.Meta(ge=0)] = 200  # of a cluster's sample prompt; 0: none


SIGNALS = (
    SignalSpec(
        name="abuse.campaign",
        family="abuse",
        dims=(("cluster", "mode"),),
        value="distinct new accounts sending the cluster's prompts over the horizon",
        unit="count",
        n="the model's prompts over the horizon",
        interval="Wilson 95% interval of the share of those prompts flagged by safety",
        baseline="distinct accounts sending the cluster's prompts over the horizon",
        evidence="count",
        evidence_text="a count of accounts of a cluster that passed the campaign test (a cluster of old"
        " text on its flagged share's one-sided Wilson bound, at flagged_false_alarms_per_week over the"
        " clusters tested and a week of windows); its other false alarms are benign repetition,"
        " measured by the detection benchmark",
    ),
    SignalSpec(
        name="abuse.account_rate",
        family="abuse",
        dims=(("user_id",),),
        value="the account's prompts over the horizon",
        unit="count",
        n="the account's prompts over the horizon",
        baseline="larger of the peers' 99th percentile and the account's own earlier rate, per horizon",
        evidence="count",
        evidence_text="a count of prompts, not an estimate",
    ),
)

ROW_COLUMNS = {
    "abuse_clusters": (
        "model_id", "cluster_id", "mode", "first_seen", "last_seen", "prompts_total", "prompts", "accounts",
        "new_accounts", "ip_hashes", "tenants", "violation_share", "growth", "sample", "top_accounts",
        "updated_at",
    ),
    "abuse_cluster_members": (
        "model_id", "cluster_id", "event_id", "window_end", "user_id", "ip_hash", "tenant_id", "flagged",
    ),
}  # fmt: skip
Prompt = tuple[str, str, str, str, str, bool]  # event_id, text (or hash), account, ip hash, tenant, flagged


def words(text: str) -> list[bytes]:
    """The word set a prompt is compared on.

    >>> words("Ignore ALL previous  instructions, ignore!")
    [b'all', b'ignore', b'instructions', b'previous']
    """
    return sorted({w.strip(".,;:!?\"'()").encode() for w in text.lower().split()} - {b""})


_SECRETS = (
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), "<email>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (re.compile(r"\d[\d -]{5,}\d"), "<number>"),
)


def redact(text: str) -> str:
    """A prompt with emails, URLs and long digit runs (phone, card, account numbers) masked.

    >>> redact("mail bob@example.com or call +1 555 123 4567, see https://x.io/a?b=1")
    'mail <email> or call +<number>, see <url>'
    """
    for pattern, mask in _SECRETS:
        text = pattern.sub(mask, text)
    return text


def _add(totals: dict[str, int], counts: dict[str, int], sign: int) -> None:
    """``totals += sign * counts``, dropping accounts that reach zero."""
    for key, c in counts.items():
        v = totals.get(key, 0) + sign * c
        if v:
            totals[key] = v
        else:
            del totals[key]


def text_key(text: str) -> str:
    """A prompt's identity for exact repeats: a digest of its lower-cased, space-collapsed text."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=10).hexdigest()


class _Seen(msgspec.Struct, array_like=True):
    """One window of one cluster."""

    start: int
    prompts: int = 0
    flagged: int = 0
    accounts: dict[str, int] = {}  # account -> prompts
    new: list[str] = []  # accounts new to the model
    ips: list[str] = []
    tenants: list[str] = []


class _Cluster:
    __slots__ = ("first", "id", "last", "members", "recent", "reported", "sample", "total")

    def __init__(self, cid: str, first: int, sample: str):
        self.id = cid
        self.first = first  # window start it was first seen
        self.last = first
        self.total = 0  # prompts since first seen
        self.reported = False  # its abuse.campaign rows run until it has been quiet a whole horizon
        self.sample = sample  # a representative prompt (the first), redacted and truncated
        self.members: list[str] = []  # text keys indexed in the LSH
        self.recent: deque[_Seen] = deque()  # the windows of the horizon with its prompts


class _Model:
    __slots__ = (
        "accounts", "before", "clusters", "exact", "lsh", "minhashes", "per_account", "recent", "start",
        "texts",
    )  # fmt: skip

    def __init__(self, start: int, cfg: AbuseConfig):
        self.start = start
        self.exact = False  # prompts came as hashes only
        self.accounts: OrderedDict[str, int] = OrderedDict()  # account -> first seen; last seen last
        self.texts: OrderedDict[str, str] = OrderedDict()  # text key -> cluster id
        self.clusters: OrderedDict[str, _Cluster] = OrderedDict()  # least recently active first
        self.lsh = MinHashLSH(threshold=cfg.similarity, num_perm=cfg.num_perm)
        self.minhashes: dict[str, LeanMinHash] = {}  # indexed text key -> its MinHash
        self.per_account: deque[tuple[int, Counter[str], int]] = deque()  # per window: by account, all
        self.recent: dict[str, int] = {}  # prompts by account over the last horizon of per_account
        self.before: dict[str, int] = {}  # ... and over the rest of it


class _ClusterState(msgspec.Struct, array_like=True):
    id: str
    first: int
    last: int
    total: int
    reported: bool
    sample: str
    members: list[tuple[str, bytes]]
    recent: list[_Seen]


class _State(msgspec.Struct, array_like=True):
    v: int
    start: int
    exact: bool
    accounts: list[tuple[str, int]]
    texts: list[tuple[str, str]]
    clusters: list[_ClusterState]
    per_account: list[tuple[int, dict[str, int], int]]


def _prompt(ev: TelemetryEvent, text: str) -> Prompt:
    """The parts of an event with prompt ``text`` that clustering and its tables use."""
    if text.isalnum() and HASHED.fullmatch(text) is not None:  # a space or a sign: no digest, no regex
        text = DIGEST + text
    ip = ev.client.ip_hash if ev.client and ev.client.ip_hash else ""
    flagged = bool(ev.safety and ev.safety.violations)
    return (ev.event_id, text, ev.user_id or ip or "", ip, ev.tenant_id or "", flagged)


@register
class AbuseMonitor(PerModelState):
    """Near-duplicate prompt clusters per model; campaign and account-rate signals."""

    family = "abuse"
    Config = AbuseConfig
    SIGNALS = SIGNALS

    def __init__(
        self, window_s: int, config: AbuseConfig | None = None, budget: dict[str, float] | None = None
    ):
        self.window_s = window_s
        self.cfg = config or AbuseConfig()
        # ``budget`` is accepted like every monitor's: abuse rules compare counts, outside the split
        self._windows: dict[int, dict[str, list[Prompt]]] = {}
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()
        self._horizon = max(1, math.ceil(self.cfg.horizon_s / window_s))
        self._rows: dict[str, list[tuple]] = {t: [] for t in ROW_COLUMNS}

    def observe(self, batch: EventColumns) -> None:
        windows, prompt, events = self._windows, batch.prompt, batch.events
        for (start, model), at in batch.groups.items():
            prompts = [_prompt(events[i], prompt[i]) for i in at if prompt[i]]  # most tabular events: none
            if not prompts:
                continue
            by_model = windows.get(start)
            if by_model is None:
                by_model = windows[start] = {}
            bucket = by_model.get(model)
            if bucket is None:
                by_model[model] = prompts
            else:
                bucket += prompts

    def close(self, start: int) -> list[Signal]:
        by_model = self._windows.pop(start, {})
        out: list[Signal] = []
        for model, prompts in sorted(by_model.items()):
            st = self._models.get(model)
            if st is None:
                st = self._models[model] = _Model(start, self.cfg)
            self._dirty.add(model)
            prompts.sort()
            out += self._window(model, st, start, prompts)
        return out

    # -- one window of one model ---------------------------------------------------------------

    def _window(self, model: str, st: _Model, start: int, prompts: list[Prompt]) -> list[Signal]:
        cfg = self.cfg
        cluster_of = self._assign(st, start, [p[1] for p in prompts])
        new_after = max(st.start + cfg.warmup_s, start - cfg.new_account_s)
        accounts = [p[2] for p in prompts]
        by_account: Counter[str] = Counter(a for a in accounts if a)
        first = {a: st.accounts.pop(a, start) for a in by_account}  # when each was first seen
        for a in reversed(dict.fromkeys(reversed(accounts))):  # to the end, most recently seen last
            if a:
                st.accounts[a] = first[a]
        members: dict[str, list[Prompt]] = {}
        for p, cid in zip(prompts, cluster_of, strict=True):
            members.setdefault(cid, []).append(p)
        seen: dict[str, tuple[_Seen, set[str], set[str], set[str]]] = {}  # cluster: window, new, ips, tenants
        for cid, ps in members.items():
            w = _Seen(start, prompts=len(ps), flagged=sum(p[5] for p in ps))
            w.accounts = dict(Counter(p[2] for p in ps if p[2]))
            new = {a for a in w.accounts if first[a] >= new_after}
            seen[cid] = (w, new, {p[3] for p in ps if p[3]}, {p[4] for p in ps if p[4]})
        while len(st.accounts) > cfg.max_accounts:
            st.accounts.popitem(last=False)
        horizon_start = start - (self._horizon - 1) * self.window_s
        for cid, (w, new, ips, tenants) in seen.items():
            w.new, w.ips, w.tenants = sorted(new), sorted(ips), sorted(tenants)
            c = st.clusters[cid]
            c.last = start
            c.total += w.prompts
            st.clusters.move_to_end(cid)
            c.recent.append(w)
        for c in st.clusters.values():
            while c.recent and c.recent[0].start < horizon_start:
                c.recent.popleft()
        self._push_accounts(st, (start, by_account, len(prompts)))
        history_start = start - max(cfg.new_account_s, cfg.horizon_s) + self.window_s
        while st.per_account and st.per_account[0][0] < history_start:
            in_before = len(st.per_account) > self._horizon
            _, old, _ = st.per_account.popleft()
            _add(st.before if in_before else st.recent, old, -1)
        self._evict(st)
        ts = datetime.fromtimestamp(start + self.window_s, UTC)
        out = self._campaigns(model, st, start, ts, seen, members)
        if start >= st.start + cfg.warmup_s:  # before that, no account has a past to compare with
            out += self._account_rates(model, st, ts)
        return out

    def _assign(self, st: _Model, start: int, texts: list[str]) -> list[str]:
        """The cluster of each prompt (in order), creating clusters and indexing variants."""
        cfg = self.cfg
        local: dict[str, str] = {}  # a window repeats its common prompts: hash each text once
        keys = []
        for t in texts:
            key = local.get(t)
            if key is None:
                key = local[t] = text_key(t)
            keys.append(key)
        fresh: dict[str, str] = {}  # key -> text, for keys not seen before, in first-seen order
        for key, text in zip(keys, texts, strict=True):
            if key not in st.texts and key not in fresh:
                fresh[key] = text
        if fresh:
            hashable = [k for k, t in fresh.items() if not t.startswith(DIGEST)]
            word_sets = [words(fresh[k]) or [b""] for k in hashable]
            bulk = MinHash.bulk(word_sets, num_perm=cfg.num_perm, seed=SEED)
            sketches = dict(zip(hashable, bulk, strict=True))
            for key, text in fresh.items():
                mh = sketches.get(key)
                cid = None
                if mh is not None:
                    near = [
                        st.texts[k] for k in st.lsh.query(mh)
                        if k in st.minhashes and st.minhashes[k].jaccard(mh) >= cfg.similarity
                        and st.texts.get(k) in st.clusters
                    ]  # fmt: skip
                    cid = min(near) if near else None
                else:
                    st.exact = True
                if cid is None:
                    cid = "c-" + key[:12]
                    sample = "" if text.startswith(DIGEST) else redact(text)[: cfg.sample_chars]
                    st.clusters[cid] = _Cluster(cid, start, sample)
                cluster = st.clusters[cid]
                if mh is not None and len(cluster.members) < cfg.members_per_cluster:
                    lean = LeanMinHash(mh)
                    st.lsh.insert(key, lean)
                    st.minhashes[key] = lean
                    cluster.members.append(key)
                st.texts[key] = cid
        for key in keys:
            st.texts.move_to_end(key)
        while len(st.texts) > cfg.max_texts:
            st.texts.popitem(last=False)
        return [st.texts[k] for k in keys]

    def _evict(self, st: _Model) -> None:
        """Forget the least recently active clusters beyond ``max_clusters``, with their variants."""
        while len(st.clusters) > self.cfg.max_clusters:
            _, c = st.clusters.popitem(last=False)
            for key in c.members:
                st.lsh.remove(key)
                st.minhashes.pop(key, None)

    def _campaigns(
        self, model: str, st: _Model, start: int, ts: datetime, active: dict, members: dict[str, list[Prompt]]
    ) -> list[Signal]:
        cfg = self.cfg
        rows = []
        population = sum(t for _, _, t in list(st.per_account)[-self._horizon :])
        tested = []
        for cid in sorted(set(active) | {cid for cid, c in st.clusters.items() if c.reported}):
            c = st.clusters[cid]
            new = set().union(*(w.new for w in c.recent))
            if not c.reported and len(new) < cfg.min_new_accounts:
                continue  # the common case, decided before counting the cluster's accounts
            n = sum(w.prompts for w in c.recent)
            k = sum(w.flagged for w in c.recent)
            accounts: Counter[str] = Counter()
            for w in c.recent:
                accounts.update(w.accounts)
            tested.append((c, new, accounts, n, k))
        # the flagged share's lower bound, at flagged_false_alarms_per_week split over the clusters
        # tested in this window and a week of windows
        alpha = look_alpha(self.cfg.flagged_false_alarms_per_week, len(tested), self.window_s)
        flagged_lower = rate_bounds([t[4] for t in tested], [t[3] for t in tested], alpha).lower
        for (c, new, accounts, n, k), lower in zip(tested, flagged_lower, strict=True):
            repeats = sum(accounts[a] for a in new) / len(new) if new else 0.0
            if self._qualifies(st, c, start, len(new), len(accounts), repeats, float(lower)):
                c.reported = True
                rows.append((c, len(new), accounts, n, k))
                continue
            if not c.reported:
                continue
            if not c.recent:
                c.reported = False  # quiet for a whole horizon: this zero row is its last
            # reported before, no campaign now: a row of 0 new accounts, so that the incident
            # resolves and a cluster that once looked like one does not page again and again
            rows.append((c, 0, accounts, n, k))
        if not rows:
            return []
        _, lo, hi = wilson_interval([r[4] for r in rows], [r[3] for r in rows])
        mode = "exact" if st.exact else "near"
        end_ms = int(ts.timestamp() * 1000)
        for c, new, accounts, n, k in rows:
            if not n:
                continue
            earlier = [w.prompts for w in c.recent][:-1]
            growth = c.recent[-1].prompts / (sum(earlier) / len(earlier)) if earlier and sum(earlier) else 0.0
            top = [a for a, _ in sorted(accounts.items(), key=lambda x: (-x[1], x[0]))[:10]]
            ips = len(set().union(*(w.ips for w in c.recent)))
            tenants = sorted(set().union(*(w.tenants for w in c.recent)))
            self._rows["abuse_clusters"].append(
                (model, c.id, mode, c.first * 1000, end_ms, c.total, n, len(accounts), new, ips, tenants,
                 k / n, growth, c.sample, top, end_ms)
            )  # fmt: skip
            self._rows["abuse_cluster_members"] += [
                (model, c.id, eid, end_ms, account, ip, tenant, int(flagged))
                for eid, _, account, ip, tenant, flagged in members.get(c.id, ())
            ]
        return [
            Signal(
                ts=ts,
                window=self.window_s,
                signal="abuse.campaign",
                model_id=model,
                dims={"cluster": c.id, "mode": mode},
                value=float(new),
                baseline=float(len(accounts)),
                n=population,
                lower=float(lo[i]) if n else None,
                upper=float(hi[i]) if n else None,
            )
            for i, (c, new, accounts, n, _) in enumerate(rows)
        ]

    def _qualifies(
        self,
        st: _Model,
        c: _Cluster,
        start: int,
        new: int,
        accounts: int,
        repeats: float,
        flagged_lower: float,
    ) -> bool:
        """Whether a cluster looks like a campaign now: enough new accounts, coordinated, and rare
        text or flagged prompts.

        Coordinated: more than ``min_new_share`` of its accounts new with 95% confidence (the
        one-sided Wilson bound: 16 new accounts of 16 pass 0.85, 15 of 15 not yet; a viral
        question whose crowd is 75% new to the model almost never passes), or more than half of
        them new with 95% confidence while the new accounts send ``min_new_repeats`` prompts each
        or more (a dozen accounts sending the template again and again; a viral question's
        newcomers ask it once). Flagged: the lower bound of its
        flagged share (``flagged_lower``, NaN without prompts) above ``min_violation_share``.
        A point estimate would not do: ten prompts of a model flagged 5% of the time are 10% or
        more flagged one time in ten, and a common cluster is tested every window for weeks.

        Rare means first seen less than ``rare_s`` ago *and* after the model's warmup: the texts
        of a model's first hour are its established traffic (before the warmup the monitor has no
        past to call a text rare against; every common prompt of a model's first hour would
        otherwise be rare for two hours, while every account is new to it).
        """
        cfg = self.cfg
        if new < cfg.min_new_accounts:
            return False
        share = _share_lower(new, accounts)
        if not (share > cfg.min_new_share or (share > 0.5 and repeats >= cfg.min_new_repeats)):
            return False
        rare = start - c.first < cfg.rare_s and c.first >= st.start + cfg.warmup_s
        return rare or flagged_lower > cfg.min_violation_share  # old, clean text gaining new users: benign

    def drain_rows(self) -> list[tuple[str, tuple[str, ...], list[tuple]]]:
        """Rows for the abuse tables the closes since the last call produced: ``(table, columns, rows)``."""
        out = [(t, ROW_COLUMNS[t], rows) for t, rows in self._rows.items() if rows]
        self._rows = {t: [] for t in ROW_COLUMNS}
        return out

    def _push_accounts(self, st: _Model, entry: tuple[int, Counter[str], int]) -> None:
        """Append a window's prompts by account, keeping the horizon's and the earlier totals."""
        st.per_account.append(entry)
        _add(st.recent, entry[1], 1)
        if len(st.per_account) > self._horizon:
            moved = st.per_account[-1 - self._horizon][1]
            _add(st.recent, moved, -1)
            _add(st.before, moved, 1)

    def _account_rates(self, model: str, st: _Model, ts: datetime) -> list[Signal]:
        recent, before = st.recent, st.before
        cut = len(st.per_account) - self._horizon
        if len(recent) < 20:
            return []  # too few peers to say what is normal
        p99 = float(np.percentile(np.fromiter(recent.values(), dtype=np.float64), 99))
        scale = self._horizon / max(cut, 1)  # the account's own earlier rate, per horizon
        # no account below this can signal, whatever its own past: only those above get a baseline
        floor = max(self.cfg.account_min, self.cfg.account_factor * max(p99, 1.0))
        out = []
        for account, count in sorted((a, c) for a, c in recent.items() if c >= floor):
            baseline = max(p99, 1.0, before.get(account, 0) * scale)
            if count >= self.cfg.account_factor * baseline:
                out.append(
                    Signal(
                        ts=ts,
                        window=self.window_s,
                        signal="abuse.account_rate",
                        model_id=model,
                        dims={"user_id": account},
                        value=float(count),
                        baseline=baseline,
                        n=count,
                    )
                )
        return out

    # -- lifecycle -----------------------------------------------------------------------------

    @staticmethod
    def _encode(st: _Model) -> bytes:
        clusters = [
            _ClusterState(
                c.id,
                c.first,
                c.last,
                c.total,
                c.reported,
                c.sample,
                [(k, st.minhashes[k].hashvalues.tobytes()) for k in c.members],
                list(c.recent),
            )
            for c in st.clusters.values()
        ]
        state = _State(
            STATE_VERSION,
            st.start,
            st.exact,
            list(st.accounts.items()),
            list(st.texts.items()),
            clusters,
            [(s, dict(c), n) for s, c, n in st.per_account],
        )
        return zlib.compress(msgspec.msgpack.encode(state), 1)  # mostly account names: ~3x smaller

    def restore(self, model: str, state: bytes) -> None:
        """Take a model's state from ``snapshot_dirty`` output (before any of its events are observed)."""
        s = msgspec.msgpack.decode(zlib.decompress(state), type=_State)
        if s.v != STATE_VERSION:
            return
        st = _Model(s.start, self.cfg)
        st.exact = s.exact
        st.accounts = OrderedDict(s.accounts)
        st.texts = OrderedDict(s.texts)
        for cs in s.clusters:
            c = _Cluster(cs.id, cs.first, cs.sample)
            c.last, c.total, c.reported = cs.last, cs.total, cs.reported
            c.recent = deque(cs.recent)
            for key, raw in cs.members:
                lean = LeanMinHash(seed=SEED, hashvalues=np.frombuffer(raw, dtype=DTYPE), scheme=SCHEME)
                st.lsh.insert(key, lean)
                st.minhashes[key] = lean
                c.members.append(key)
            st.clusters[c.id] = c
        for start, c, n in s.per_account:
            self._push_accounts(st, (start, Counter(c), n))
        self._models[model] = st


def _share_lower(k: int, n: int) -> float:
    """One-sided 95% Wilson lower bound of the share ``k / n``.

    >>> round(_share_lower(10, 10), 3), round(_share_lower(9, 10), 3)
    (0.787, 0.652)
    """
    return float(wilson_interval(k, n, confidence=0.90)[1])
