"""raiwatch: production monitoring and alerting for AI models.

This package holds the entry points (command line, worker, replay, demo, report) and the wiring
of the layers below them; ``raiwatch.core`` is the vocabulary every layer shares and
``raiwatch.dev`` the developer tooling.
"""
