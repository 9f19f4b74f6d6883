"""Chaos that asks the vendor: real keepers killed, signalled and starved of their lease mid-refresh,
on every store and lock, each round's end judged at the vendor.

``python -m tests.concurrency.chaos --rounds N`` is ``make chaos`` (``ROUNDS``, default 10,000).
Modules: :mod:`.catalogue` (fault classes and what each must end in), :mod:`.child` (one
process), :mod:`.servers` (the real servers and what is done to them), :mod:`.runner` (staging
the rounds), :mod:`.judge` (the checks).
"""

from .catalogue import COMBOS, FAULTS, STORES
from .runner import ChaosReport, run_chaos

__all__ = ["COMBOS", "FAULTS", "STORES", "ChaosReport", "run_chaos"]
