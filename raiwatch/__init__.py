"""raiwatch: production monitoring and alerting for AI models.

This package holds the entry points (command line, worker, replay, demo, report) and the wiring
of the layers below them; ``raiwatch.core`` is the vocabulary every layer shares and
``raiwatch.dev`` the developer tooling.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("raiwatch")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
