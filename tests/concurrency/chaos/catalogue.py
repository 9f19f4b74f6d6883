"""The fault classes of the chaos run: how each is staged and what it must end in.

Every class names the flow the runner stages (one process, a signal while the answer is held at
the vendor, a pause at a checkpoint while the lock server is made to misbehave, or a holder and a
waiter), the outcomes its processes may report, and the end state (judged at the vendor after a
recovery run) each store must reach. An outcome or end state outside these sets is a violation:
the expectations are the crash-safe rotation table of docs/concurrency.md, made checkable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STORES = ("file", "vault", "aws", "variable")
#: (store, lock) pairs: every store with two locks, every lock with two stores (the Variable
#: store with the file lock, its embedded default, and Redis).
COMBOS = (
    ("file", "file"),
    ("file", "redis"),
    ("vault", "redis"),
    ("vault", "postgres"),
    ("aws", "postgres"),
    ("aws", "file"),
    ("variable", "file"),
    ("variable", "redis"),
)
#: The claim's settle time of the Variable store (no compare-and-set) in the chaos keepers: shortened
#: from 6 s like the stale bound (5 s instead of 186 s). The keeper withdraws a claim whose compare
#: read to acknowledgement took more than settle / 2; one PostgreSQL makes a committed write visible
#: to every reader at once.
SETTLE = 0.5

#: The vendor's reuse window in grace rounds (seconds; below the 5 s stale bound of the chaos keepers).
GRACE_WINDOW = 3.0

#: The two torn writes of each store, alternating by round (odd rounds: the first).
TORN_VARIANTS = {
    "file": ("partial", "before_rename"),
    # The upsert executed inside its open transaction, the writer killed before COMMIT (rolled
    # back); or Variable.set committed, the writer killed before its read-back (never acknowledged).
    "variable": ("uncommitted", "before_echo"),
}


def torn_variant(store: str, n: int) -> str:
    """The torn write round ``n`` stages on ``store``."""
    first, second = TORN_VARIANTS.get(store, ("partial", "before_rename"))
    return first if n % 2 else second


#: End states of a torn write that depend on the variant (else the class's end for the store).
TORN_END = {
    ("variable", "uncommitted"): frozenset({"reauth_required"}),
    ("variable", "before_echo"): frozenset({"valid"}),
}

VALID = frozenset({"valid"})
REAUTH = frozenset({"reauth_required"})


@dataclass(frozen=True)
class FaultClass:
    """One fault class.

    :param name: the class's name (a row of the table).
    :param flow: ``plain``, ``signal``, ``pause`` or ``waiter`` (see the runner).
    :param holder: outcomes the faulted process may end with: ``token``, ``killed``, ``error:<kind>``
        (``error:*`` for any provider error), ``terminated``.
    :param end: end states allowed after recovery, per store (``*``: every store).
    :param locks: the locks the class applies to (``None``: all).
    :param waiter: outcomes the waiter may end with (``waiter`` flow only).
    """

    name: str
    flow: str
    holder: frozenset[str]
    end: dict[str, frozenset[str]]
    locks: frozenset[str] | None = None
    waiter: frozenset[str] = field(default_factory=frozenset)
    kill_at: str | None = None
    pause_at: str | None = None
    action: str | None = None
    store_fault: str | None = None
    vendor_fault: tuple[str, dict[str, object]] | None = None
    signal_name: str | None = None
    #: The vendor's reuse-window variant for the round (and the keeper's ``reuse_grace``); ``None``:
    #: strict reuse detection, as the vendor documents describe.
    grace: str | None = None
    #: The holder's read timeout (a held answer past it is lost); ``None``: the round's default.
    client_timeout: float | None = None

    def expected_end(self, store: str, n: int | None = None) -> frozenset[str]:
        """The end states allowed on ``store`` (in round ``n``: a torn write's variant decides)."""
        if self.store_fault == "torn" and n is not None and (store, torn_variant(store, n)) in TORN_END:
            return TORN_END[(store, torn_variant(store, n))]
        return self.end.get(store, self.end.get("*", frozenset()))

    def applies(self, lock: str) -> bool:
        return self.locks is None or lock in self.locks


def _f(
    name: str, flow: str, holder: set[str], end: frozenset[str] | dict[str, frozenset[str]], **kw: object
) -> FaultClass:
    ends = end if isinstance(end, dict) else {"*": end}
    return FaultClass(name, flow, frozenset(holder), ends, **kw)  # type: ignore[arg-type]


LEASE_LOCKS = frozenset({"redis", "postgres"})
ANY_ERROR = {"token", "error:*"}  # a transient fault may be retried away within the call

FAULTS: dict[str, FaultClass] = {
    f.name: f
    for f in [
        _f("none", "plain", {"token"}, VALID),
        _f("kill_before_request", "plain", {"killed"}, VALID, kill_at="before_request"),
        _f("kill_after_answer", "plain", {"killed"}, REAUTH, kill_at="after_answer"),
        # A write cut in the middle: file = part of the temp file written, or written but not
        # renamed (alternating); aws = new version staged AWSPENDING, never promoted; vault = the
        # KV v2 write applied, the writer killed before it read the acknowledgement; variable = the
        # upsert executed but never committed (reauth), or committed but never read back (valid).
        _f(
            "torn_write",
            "plain",
            {"killed"},
            {"file": REAUTH, "aws": REAUTH, "vault": VALID, "variable": VALID | REAUTH},
            store_fault="torn",
        ),
        _f("sigterm_mid_refresh", "signal", {"terminated"}, VALID, signal_name="SIGTERM"),
        _f("sigint_mid_refresh", "signal", {"terminated"}, VALID, signal_name="SIGINT"),
        _f("sigalrm_mid_refresh", "signal", {"terminated"}, VALID, signal_name="SIGALRM"),
        _f(
            "waiter_holder_killed_before_request",
            "waiter",
            {"killed"},
            VALID,
            waiter=frozenset({"token"}),
            pause_at="before_request",
        ),
        _f(
            "waiter_holder_killed_after_answer",
            "waiter",
            {"killed"},
            REAUTH,
            waiter=frozenset({"error:reauth_required"}),
            pause_at="after_answer",
        ),
        _f("store_write_fails_once", "plain", {"token"}, VALID, store_fault="fail_once"),
        _f("store_write_fails_always", "plain", {"error:store"}, REAUTH, store_fault="fail_always"),
        _f("vendor_http_500", "plain", ANY_ERROR, VALID, vendor_fault=("http_500", {})),
        _f(
            "vendor_http_503_retry_after",
            "plain",
            ANY_ERROR,
            VALID,
            vendor_fault=("http_503", {"retry_after": 0}),
        ),
        _f("vendor_drop_before", "plain", ANY_ERROR, VALID, vendor_fault=("drop_before", {})),
        _f("vendor_drop_after", "plain", {"error:outcome_unknown"}, REAUTH, vendor_fault=("drop_after", {})),
        _f(
            "vendor_malformed_json",
            "plain",
            {"error:malformed_response"},
            VALID,
            vendor_fault=("malformed_json", {}),
        ),
        _f(
            "vendor_timeout",
            "plain",
            {"error:outcome_unknown"},
            REAUTH,
            vendor_fault=("slow", {"delay": 0.8}),
            client_timeout=0.3,
        ),
        # The same lost answers on vendors with a reuse window, and the keeper told of it: the
        # refresh token is sent again inside the window and the chain is recovered.
        _f("grace_drop_after_new_pair", "plain", {"token"}, VALID, vendor_fault=("drop_after", {}), grace="new_pair"),
        _f(
            "grace_drop_after_previous_only",
            "plain",
            {"token"},
            VALID,
            vendor_fault=("drop_after", {}),
            grace="previous_only",
        ),
        _f(
            "grace_timeout_same_pair",
            "plain",
            {"token"},
            VALID,
            vendor_fault=("slow", {"delay": 0.8}),
            client_timeout=0.3,
            grace="same_pair",
        ),
        _f(
            "lease_lost_before_call",
            "pause",
            {"error:lock_lost"},
            VALID,
            locks=LEASE_LOCKS,
            pause_at="intent_written",
            action="lose_lease",
        ),
        _f(
            "lease_lost_during_call",
            "pause",
            {"token"},
            VALID,
            locks=LEASE_LOCKS,
            pause_at="before_request",
            action="lose_lease",
        ),
        _f(
            "lock_server_restart",
            "pause",
            {"token"},
            VALID,
            locks=LEASE_LOCKS,
            pause_at="before_request",
            action="restart_lock_server",
        ),
    ]
}
