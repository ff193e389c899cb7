"""ORConsole core: domain models, treatment-time calculation, interlocks, state machine, supervisor.

Qt-free by rule (a test enforces it): the UI renders snapshots the core publishes and sends
commands the core validates.
"""

__version__ = "0.1.0"
