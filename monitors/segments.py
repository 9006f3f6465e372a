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
