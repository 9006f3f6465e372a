"""The monitor registry: every monitor module of this package, found and described in one place.

A monitor class declares ``family``, ``Config`` (a msgspec Struct whose defaults run out of the
box) and ``SIGNALS`` (its ``SignalSpec`` catalogue), and is decorated with ``@register``. Every
module of the ``monitors`` package is imported here, so adding a family is adding its module:
configuration (``monitors.<family>`` in the config file), ``build_monitors``, the signal catalogue
that ``rules lint`` checks, and the ``/metrics`` export all derive from the registry.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import msgspec

from monitors.base import Monitor
from raiwatch.core.catalogue import Catalogue
from raiwatch.core.errors import ConfigError

_REGISTRY: dict[str, type] = {}
_LOADED = False


def register(cls: type) -> type:
    """Class decorator: make a monitor known by its ``family``."""
    for attr in ("family", "Config", "SIGNALS"):
        if not hasattr(cls, attr):
            raise TypeError(f"monitor {cls.__name__} must declare {attr}")
    if cls.family in _REGISTRY and _REGISTRY[cls.family] is not cls:
        raise TypeError(f"two monitors declare family {cls.family!r}")
    if any(s.family != cls.family for s in cls.SIGNALS):
        raise TypeError(f"monitor {cls.__name__} declares signals of another family")
    _REGISTRY[cls.family] = cls
    return cls


def monitor_classes() -> dict[str, type]:
    """Every registered monitor class by family (importing every module of this package once)."""
    global _LOADED
    if not _LOADED:
        import monitors

        for mod in pkgutil.iter_modules(monitors.__path__):
            importlib.import_module(f"monitors.{mod.name}")
        _LOADED = True
    return dict(sorted(_REGISTRY.items()))


def catalogue() -> Catalogue:
    """Every signal every monitor emits."""
    return Catalogue(s for cls in monitor_classes().values() for s in cls.SIGNALS)


def monitor_configs(sections: Mapping[str, Any]) -> dict[str, msgspec.Struct]:
    """Each family's settings from the ``monitors`` section of a config file, defaults filled in.

    Raises ``ConfigError`` naming ``monitors.<family>.<field>`` for a bad value, and the closest
    family for an unknown one.
    """
    classes = monitor_classes()
    for name in sections:
        if name not in classes:
            close = difflib.get_close_matches(name, list(classes), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(classes)}"
            raise ConfigError(f"bad setting: monitors.{name} is no monitor family ({hint})")
    out = {}
    for family, cls in classes.items():
        raw = sections.get(family) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"bad setting: monitors.{family} must be a mapping of settings")
        try:
            out[family] = msgspec.convert(raw, cls.Config, strict=False)
        except msgspec.ValidationError as e:
            msg = str(e).replace("$.", f"monitors.{family}.").replace("`$`", f"monitors.{family}")
            raise ConfigError(f"bad setting: {msg}") from None
    return out


def budgets(per_model_week: float = 1.0) -> dict[str, float]:
    """The false-alarm budget of a model, in expected false alarms per week, split over the signals
    that threshold rules test: an equal share per family whose signals declare a ``budget`` weight,
    split within the family by those weights. Each monitor sets its bounds and decision limits
    from its signals' shares (``detectors.evidence.look_alpha``, ``detectors.cusum.threshold``), so
    the shipped rules together raise at most ``per_model_week`` false alarms per model-week.

    >>> b = budgets(1.0)
    >>> round(sum(b.values()), 9), round(b["fairness.disparity"], 3)
    (1.0, 0.075)
    """
    weights: dict[str, dict[str, float]] = {}
    for spec in catalogue().values():
        if spec.budget > 0:
            weights.setdefault(spec.family, {})[spec.name] = spec.budget
    out: dict[str, float] = {}
    for family in weights.values():
        total = sum(family.values())
        for name, w in family.items():
            out[name] = per_model_week / len(weights) * w / total
    return out


def build_monitors(window_s: int, sections: Mapping[str, Any], per_model_week: float = 1.0) -> list[Monitor]:
    """One instance of every registered monitor not turned off (``enabled: false``), configured
    from ``sections``, each with its signals' shares of the false-alarm budget (``budgets``: a
    family turned off leaves its share unspent, the others' stay as they are)."""
    configs = monitor_configs(sections)
    shares = budgets(per_model_week)
    return [
        cls(window_s, configs[family], budget=shares)
        for family, cls in monitor_classes().items()
        if configs[family].enabled
    ]
