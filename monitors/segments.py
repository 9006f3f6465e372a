"""The fairness groups an event belongs to: one per segment attribute, per configured attribute pair
(intersectional groups), and optionally its tenant.

>>> groups_of({"age_band": "65+", "sex": "female", "region": None}, "", [("age_band", "sex")], tenants=False)
[('age_band', '65+'), ('sex', 'female'), ('age_band&sex', '65+&female')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Key = tuple[str, str]  # attribute, group
PAIR_SEP = "&"


def groups_of(
    segments: Mapping[str, str | None] | None,
    tenant: str,
    pairs: Sequence[tuple[str, str]],
    tenants: bool,
) -> list[Key]:
    """``(attribute, group)`` for each known segment, each pair both of whose parts are known,
    and ``("tenant_id", tenant)`` when ``tenants``; a missing or null attribute is no group."""
    keys = [(a, g) for a, g in segments.items() if g is not None] if segments else []
    if pairs and segments:
        for a, b in pairs:
            ga, gb = segments.get(a), segments.get(b)
            if ga is not None and gb is not None:
                keys.append((f"{a}{PAIR_SEP}{b}", f"{ga}{PAIR_SEP}{gb}"))
    if tenants and tenant:
        keys.append(("tenant_id", tenant))
    return keys


def best_per_attribute(
    keys: Sequence[Key], rate: Sequence[float], n: Sequence[float], min_n: float, highest: bool = True
) -> dict[str, int]:
    """Per attribute, the index of its best-treated group among those with ``min_n`` or more:
    the highest ``rate`` (or the lowest, for a rate where lower is better); the first on a tie.

    >>> best_per_attribute([("sex", "f"), ("sex", "m"), ("age", "65+")], [0.7, 0.8, 0.5], [300, 50, 300], 100)
    {'sex': 0, 'age': 2}
    """
    best: dict[str, int] = {}
    for i, (attr, _) in enumerate(keys):
        if n[i] < min_n:
            continue
        b = best.get(attr)
        if b is None or (rate[i] > rate[b] if highest else rate[i] < rate[b]):
            best[attr] = i
    return best
