"""Property and table tests of the pure refresh/lease decision :func:`lease.decide`.

The properties assert invariants of the protocol (what must never happen, and what must happen when
nothing stands in the way) over generated stored records; they do not re-implement :func:`decide`.
Every scenario carries its ground truth (intent age, seed relation, ...) computed from the integers
it was built from, never from the helpers of :mod:`lease`.

Times are whole milliseconds so that "exactly at the bound" is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from airflow_provider_tokenrefresh.lease import MAX_SUPERSEDED_SEEDS, Decision, View, decide, effective_margin
from airflow_provider_tokenrefresh.tokens import RECORD_SCHEMA_VERSION, TokenRecord, fingerprint

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
ACCESS = SecretStr("a" * 20)
REFRESH = SecretStr("r" * 20)

#: Seed refresh tokens (as a connection would carry them) and their fingerprints.
SEED_SECRETS = [f"seed-refresh-token-{i:02d}-" + "s" * 20 for i in range(40)]
SEED_FPS = [fingerprint(s) for s in SEED_SECRETS]

#: Lock identity -> kind, as the lock classes spell their identities.
LOCKS = {
    "file": "file",
    "redis://cache:6379/0": "redis",
    "rediss://cache:6380/1": "redis",
    "postgres://db:5432/airflow": "postgres",
}

SENDS = ("refresh", "replay")
NEWER_SCHEMA = RECORD_SCHEMA_VERSION + 1


def ms(n: int) -> timedelta:
    return timedelta(milliseconds=n)


def seed_for(index: int) -> TokenRecord:
    """Generation 0 of a connection's refresh token, as the keeper builds it."""
    return TokenRecord.seeded(SEED_SECRETS[index]).model_copy(update={"updated_at": NOW})


def record(**update: object) -> TokenRecord:
    """A valid generation-5 record seeded from seed 0, with an hour on both tokens."""
    values: dict[str, object] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": NOW + timedelta(hours=1),
        "refresh_expires_at": NOW + timedelta(days=30),
        "seed_fingerprint": SEED_FPS[0],
        "generation": 5,
        "updated_at": NOW,
        "obtained_at": NOW - timedelta(minutes=5),
    }
    values.update(update)
    return TokenRecord(**values)  # type: ignore[arg-type]


def view(rec: TokenRecord | None, seed_index: int = 0, **update: object) -> View:
    values: dict[str, object] = {
        "record": rec,
        "seed_fingerprint": SEED_FPS[seed_index],
        "now": NOW,
        "min_ttl": 60.0,
        "refresh_margin": 300.0,
        "stale_after": 120.0,
    }
    values.update(update)
    return View(**values)  # type: ignore[arg-type]


def intent(age: timedelta, by: str = "worker-b:4242") -> dict[str, object]:
    return {"refresh_started_at": NOW - age, "refresh_started_by": by, "intent_id": "intent-1"}


# --------------------------------------------------------------------------------------------------
# Scenarios with their ground truth
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the scenario is, known from how it was built."""

    has_record: bool
    state: str | None
    has_intent: bool
    young: bool  # an intent younger than the bound (future-dated ones count as just written)
    future_intent: bool
    intent_age_ms: int | None
    stale_after_ms: int
    relation: str  # "none" (no record), "equal", "superseded", "new"
    access_ok: bool  # access token present and at least min_ttl left
    refresh_ok: bool  # refresh token present and at least refresh_margin left
    force: bool
    satisfied: bool  # satisfied_above given and the stored generation above it
    retry_rejected: bool
    newer_schema: bool
    lock_mismatch: bool  # kinds differ, the record names a lock, lock: auto


@dataclass(frozen=True)
class Scenario:
    view: View
    seed: TokenRecord
    facts: Facts

    def __repr__(self) -> str:  # hypothesis prints this for a counterexample
        rec = self.view.record
        rec_txt = (
            "None"
            if rec is None
            else (
                f"TokenRecord(state={rec.state!r}, generation={rec.generation}, schema={rec.schema_version}, "
                f"seed_fp={rec.seed_fingerprint!r}, superseded={list(rec.superseded_seeds)!r}, "
                f"intent_at={rec.refresh_started_at}, access={rec.access_token is not None}, "
                f"expires_at={rec.expires_at}, refresh={rec.refresh_token is not None}, "
                f"refresh_expires_at={rec.refresh_expires_at}, lock_in_use={rec.lock_in_use!r})"
            )
        )
        v = self.view
        return (
            f"Scenario(record={rec_txt}, view_seed_fp={v.seed_fingerprint!r}, now={v.now}, "
            f"min_ttl={v.min_ttl}, refresh_margin={v.refresh_margin}, stale_after={v.stale_after}, "
            f"force={v.force}, satisfied_above={v.satisfied_above}, retry_rejected={v.retry_rejected}, "
            f"lock={v.lock!r}, lock_explicit={v.lock_explicit}, facts={self.facts})"
        )


# Strategies built once (building them inside the composite costs more than deciding).
_NEAR = st.sampled_from([0, -1, 1, -1000, 1000])
_STALE_MS = st.sampled_from([1, 1000, 30_000, 120_000]) | st.integers(1, 900_000)
_MIN_MS = st.sampled_from([0, 1000, 60_000, 300_000]) | st.integers(0, 3_600_000)
_MARGIN_MS = st.sampled_from([0, 1000, 300_000, 86_400_000]) | st.integers(0, 86_400_000)
_SEED_START = st.integers(0, len(SEED_FPS) - 1)
_LOCK = st.sampled_from(sorted(LOCKS))
_LOCK_IN_USE = st.none() | _LOCK
_BOOL = st.booleans()
_MOSTLY_FALSE = st.sampled_from([False, False, True])
_HAS_RECORD = st.sampled_from([True] * 7 + [False])
_RELATION = st.sampled_from(["equal", "superseded", "new"])
_N_SUPERSEDED = st.integers(0, MAX_SUPERSEDED_SEEDS)
_INTENT_KIND = st.sampled_from(["none", "none", "none", "around", "around", "anywhere", "future"])
_FUTURE_MS = st.integers(1, 600_000)
_ACCESS_KIND = st.sampled_from(["around", "around", "around", "no_token", "no_expiry"])
_ACCESS_OFF = st.one_of(
    _NEAR, st.integers(-120_000, 120_000), st.integers(-10_000_000, 10_000_000), st.integers(0, 10_000_000)
)
_REFRESH_KIND = st.sampled_from(["around", "around", "around", "no_expiry", "no_token"])
_REFRESH_OFF = st.one_of(
    _NEAR, st.integers(-120_000, 120_000), st.integers(-100_000_000, 100_000_000), st.integers(0, 10**9)
)
_STATE = st.sampled_from(["valid", "valid", "suspect", "reauth_required"])
_GENERATION = st.integers(0, 50)
_SCHEMA = st.sampled_from([RECORD_SCHEMA_VERSION] * 4 + [1, NEWER_SCHEMA, RECORD_SCHEMA_VERSION + 5])
_REASON = st.none() | st.just("invalid_grant: token revoked")
_BY = st.sampled_from(["me:1", "worker-b:4242", None])
_SATISFIED_NO_RECORD = st.none() | st.integers(-1, 10)
_SATISFIED_OFF = st.none() | st.integers(-2, 1)
_AGE_ANY = st.integers(0, 10**9)


@st.composite
def scenarios(
    draw: st.DrawFn, *, with_record: bool | None = None, **fixed: st.SearchStrategy[object]
) -> Scenario:
    """A view and the seed of its connection. ``fixed`` replaces the strategy of ``relation``,
    ``state``, ``intent_kind``, ``schema``, ``lock_in_use``, ``lock``, ``lock_explicit``, ``force``
    or ``retry_rejected`` (to aim a property at one rule)."""
    unknown = set(fixed) - {
        "relation",
        "state",
        "intent_kind",
        "schema",
        "lock_in_use",
        "lock",
        "lock_explicit",
        "force",
        "retry_rejected",
    }
    assert not unknown, unknown

    def pick(name: str, default: st.SearchStrategy[object]) -> object:
        return draw(fixed.get(name, default))

    stale_ms = draw(_STALE_MS)
    min_ms = draw(_MIN_MS)
    margin_ms = draw(_MARGIN_MS)

    start = draw(_SEED_START)
    seeds = [(start + k) % len(SEED_FPS) for k in range(len(SEED_FPS))]
    view_index = seeds[0]
    seed = seed_for(view_index)
    force = bool(pick("force", _MOSTLY_FALSE))
    retry_rejected = bool(pick("retry_rejected", _MOSTLY_FALSE))
    lock = str(pick("lock", _LOCK))
    lock_explicit = bool(pick("lock_explicit", _BOOL))

    def make_view(record: TokenRecord | None, satisfied_above: int | None) -> View:
        return View(
            record=record,
            seed_fingerprint=SEED_FPS[view_index],
            now=NOW,
            min_ttl=min_ms / 1000,
            refresh_margin=margin_ms / 1000,
            stale_after=stale_ms / 1000,
            force=force,
            satisfied_above=satisfied_above,
            retry_rejected=retry_rejected,
            lock=lock,
            lock_explicit=lock_explicit,
        )

    has_record = draw(_HAS_RECORD) if with_record is None else with_record
    if not has_record:
        v = make_view(None, draw(_SATISFIED_NO_RECORD))
        facts = Facts(
            has_record=False,
            state=None,
            has_intent=False,
            young=False,
            future_intent=False,
            intent_age_ms=None,
            stale_after_ms=stale_ms,
            relation="none",
            access_ok=False,
            refresh_ok=False,
            force=force,
            satisfied=False,
            retry_rejected=retry_rejected,
            newer_schema=False,
            lock_mismatch=False,
        )
        return Scenario(v, seed, facts)

    # -- the seed relation: the view's seed equals the record's, was superseded by it, or is new
    relation = pick("relation", _RELATION)
    n_superseded = draw(_N_SUPERSEDED)
    if relation == "superseded":
        n_superseded = max(n_superseded, 1)
    others = list(seeds[1:])
    record_fp: str | None
    if relation == "equal":
        record_fp = SEED_FPS[view_index]
        superseded = [SEED_FPS[i] for i in others[:n_superseded]]
    elif relation == "superseded":
        record_fp = SEED_FPS[others[0]]
        pool = [SEED_FPS[i] for i in others[1:n_superseded]]
        at = draw(_N_SUPERSEDED) % (len(pool) + 1)
        superseded = [*pool[:at], SEED_FPS[view_index], *pool[at:]]
    else:
        record_fp = SEED_FPS[others[0]] if draw(_BOOL) else None
        superseded = [SEED_FPS[i] for i in others[1 : 1 + n_superseded]]

    # -- intent: none, around the bound, anywhere, or in the future (clock skew)
    intent_kind = pick("intent_kind", _INTENT_KIND)
    age_ms: int | None
    if intent_kind == "none":
        age_ms = None
    elif intent_kind == "around":
        age_ms = max(0, stale_ms + draw(_NEAR))
    elif intent_kind == "anywhere":
        age_ms = draw(_AGE_ANY) % (3 * stale_ms + 10_000)
    else:
        age_ms = -draw(_FUTURE_MS)
    has_intent = age_ms is not None
    future = age_ms is not None and age_ms < 0
    young = age_ms is not None and (age_ms < 0 or age_ms < stale_ms)

    # -- tokens: access ttl around min_ttl, refresh ttl around the margin
    access_kind = draw(_ACCESS_KIND)
    access_off = draw(_ACCESS_OFF)
    access_token = None if access_kind == "no_token" else ACCESS
    expires_at = None if access_kind == "no_expiry" else NOW + ms(min_ms + access_off)
    access_ok = access_kind == "around" and min_ms + access_off >= min_ms

    refresh_kind = draw(_REFRESH_KIND)
    refresh_off = draw(_REFRESH_OFF)
    refresh_token = None if refresh_kind == "no_token" else REFRESH
    refresh_expires_at = None if refresh_kind != "around" else NOW + ms(margin_ms + refresh_off)
    refresh_ok = refresh_kind == "no_expiry" or (refresh_kind == "around" and refresh_off >= 0)

    state = str(pick("state", _STATE))
    generation = draw(_GENERATION)
    satisfied_off = draw(_SATISFIED_OFF)
    satisfied_above = None if satisfied_off is None else generation + satisfied_off
    schema_version = int(pick("schema", _SCHEMA))  # type: ignore[call-overload]
    lock_in_use: str | None = pick("lock_in_use", _LOCK_IN_USE)  # type: ignore[assignment]

    rec = TokenRecord(
        schema_version=schema_version,
        access_token=access_token,
        expires_at=expires_at,
        refresh_token=refresh_token,
        refresh_expires_at=refresh_expires_at,
        obtained_at=NOW - timedelta(minutes=10),
        generation=generation,
        seed_fingerprint=record_fp,
        state=state,  # type: ignore[arg-type]
        reason=draw(_REASON),
        refresh_started_at=None if age_ms is None else NOW - ms(age_ms),
        refresh_started_by=None if age_ms is None else draw(_BY),
        intent_id=None if age_ms is None else "intent-1",
        superseded_seeds=tuple(superseded),
        lock_in_use=lock_in_use,
        updated_at=NOW - timedelta(minutes=1),
    )
    v = make_view(rec, satisfied_above)
    # The margins the decision applies: never more than half the token's lifetime.
    access_ok = rec.access_token is not None and rec.access_ttl(NOW) >= effective_margin(
        v.min_ttl, rec.access_lifetime()
    )
    refresh_ok = rec.refresh_token is not None and rec.refresh_ttl(NOW) >= effective_margin(
        v.refresh_margin, rec.refresh_lifetime()
    )
    facts = Facts(
        has_record=True,
        state=state,
        has_intent=has_intent,
        young=young,
        future_intent=future,
        intent_age_ms=age_ms,
        stale_after_ms=stale_ms,
        relation=relation,
        access_ok=access_ok,
        refresh_ok=refresh_ok,
        force=force,
        satisfied=satisfied_above is not None and generation > satisfied_above,
        retry_rejected=retry_rejected,
        newer_schema=schema_version > RECORD_SCHEMA_VERSION,
        lock_mismatch=(lock_in_use is not None and LOCKS[lock_in_use] != LOCKS[lock] and not lock_explicit),
    )
    return Scenario(v, seed, facts)


# --------------------------------------------------------------------------------------------------
# Invariants: each takes the scenario and the decision, and asserts
# --------------------------------------------------------------------------------------------------


def inv_every_action_is_known(s: Scenario, d: Decision) -> None:
    assert d.action in ("use", "refresh", "replay", "wait", "refuse")


def inv_no_record_refreshes_from_the_seed(s: Scenario, d: Decision) -> None:
    if not s.facts.has_record:
        assert d.action == "refresh"
        assert d.base == s.seed


def inv_never_send_while_an_intent_is_young(s: Scenario, d: Decision) -> None:
    """Rule 2: a young intent (any writer, also after a re-seed, also future-dated) means wait."""
    if s.facts.young:
        assert d.action not in SENDS
        assert d.action == "wait"


def inv_wait_only_for_a_young_intent(s: Scenario, d: Decision) -> None:
    if d.action == "wait":
        assert s.facts.young


def inv_replay_only_for_intents_at_least_the_bound_old(s: Scenario, d: Decision) -> None:
    if d.action == "replay":
        f = s.facts
        assert f.has_intent
        assert not f.future_intent
        assert f.intent_age_ms is not None and f.intent_age_ms >= f.stale_after_ms


def inv_replay_presents_the_stored_record(s: Scenario, d: Decision) -> None:
    if d.action == "replay":
        assert d.base == s.view.record


def inv_never_use_a_record_that_is_not_valid(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert s.facts.state == "valid"
        assert d.base is not None
        assert d.base.state == "valid"


def inv_never_use_with_less_than_min_ttl(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert s.facts.access_ok
        assert d.base is not None
        assert d.base.access_token is not None
        assert d.base.access_ttl(s.view.now) >= effective_margin(s.view.min_ttl, d.base.access_lifetime())


def inv_never_use_a_refresh_token_inside_the_margin(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert s.facts.refresh_ok


def inv_force_is_only_answered_by_use_when_satisfied(s: Scenario, d: Decision) -> None:
    if d.action == "use" and s.facts.force:
        assert s.facts.satisfied


def inv_never_use_with_an_intent_pending(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert not s.facts.has_intent


def inv_use_hands_out_the_stored_record(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert d.base == s.view.record


def inv_a_new_seed_is_never_ignored_by_use(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert s.facts.relation in ("equal", "superseded")


def inv_a_superseded_seed_never_becomes_the_base(s: Scenario, d: Decision) -> None:
    if s.facts.relation == "superseded":
        assert s.view.record is not None
        if d.base is not None:
            assert d.base.seed_fingerprint != s.view.seed_fingerprint
            assert d.base.refresh_token != s.seed.refresh_token
            assert d.base.generation >= s.view.record.generation


def inv_a_superseded_seed_is_flagged(s: Scenario, d: Decision) -> None:
    if d.action == "use":
        assert d.stale_seed == (s.facts.relation == "superseded")
    if s.facts.relation != "superseded":
        assert not d.stale_seed
        assert d.refuse != "stale_seed"


def inv_generations_never_go_backwards_in_base(s: Scenario, d: Decision) -> None:
    rec = s.view.record
    if rec is not None and d.base is not None:
        assert d.base.generation >= rec.generation


def inv_sending_always_has_a_base_with_a_refresh_token_slot(s: Scenario, d: Decision) -> None:
    if d.action in SENDS:
        assert d.base is not None


def inv_a_newer_schema_is_never_written(s: Scenario, d: Decision) -> None:
    """Rule 6: only use / wait / refuse for a record of a newer schema; use is read-only."""
    if s.facts.newer_schema:
        assert d.action in ("use", "wait", "refuse")
        if d.action == "use":
            assert d.read_only
    if d.action in SENDS:
        assert d.base is not None
        assert d.base.schema_version <= RECORD_SCHEMA_VERSION
        d.base.to_storage_json()  # the keeper writes the intent on it: must not raise


def inv_refuse_and_wait_explain_themselves(s: Scenario, d: Decision) -> None:
    if d.action in ("refuse", "wait"):
        assert d.reason.strip()
    if d.action == "refuse":
        assert d.refuse in ("reauth_required", "newer_schema", "lock_mismatch", "stale_seed")
    else:
        assert d.refuse is None


def inv_reauth_required_is_refused_unless_retry_rejected(s: Scenario, d: Decision) -> None:
    """Rule 4 (a new seed on the connection is the documented way out, so it is exempt)."""
    f = s.facts
    if f.state == "reauth_required" and not f.retry_rejected and f.relation != "new":
        assert d.action in ("wait", "refuse")


def inv_suspect_is_never_used(s: Scenario, d: Decision) -> None:
    if s.facts.state == "suspect":
        assert d.action != "use"


def inv_suspect_is_refreshed_when_nothing_blocks(s: Scenario, d: Decision) -> None:
    f = s.facts
    if f.state == "suspect" and not f.young and not f.newer_schema and not f.lock_mismatch:
        assert d.action in SENDS


def inv_lock_mismatch_under_auto_is_refused(s: Scenario, d: Decision) -> None:
    """Rule 7: a record coordinated by another kind of lock, and lock: auto -> never send."""
    f = s.facts
    if f.lock_mismatch:
        assert d.action in ("wait", "refuse")
        if not f.young:
            assert d.action == "refuse"


def inv_no_refuse_for_lock_when_explicit_or_same_kind(s: Scenario, d: Decision) -> None:
    if d.refuse == "lock_mismatch":
        assert s.facts.lock_mismatch


def inv_a_new_seed_reseeds_after_the_record(s: Scenario, d: Decision) -> None:
    """Rule 3: a new seed (not superseded) -> refresh from a generation-0-like record placed after
    the stored one, remembering the stored record's seed."""
    f = s.facts
    rec = s.view.record
    if f.relation != "new" or f.young or f.newer_schema:
        return
    assert rec is not None
    if d.action == "refuse" and f.lock_mismatch:
        return  # rule 7 may refuse first
    assert d.action == "refresh"
    base = d.base
    assert base is not None
    assert base.generation == rec.generation + 1
    assert base.seed_fingerprint == s.view.seed_fingerprint
    assert base.refresh_token == s.seed.refresh_token
    assert base.refresh_started_at is None
    assert base.state == "valid"
    if rec.seed_fingerprint is not None:
        assert rec.seed_fingerprint in base.superseded_seeds
    assert s.view.seed_fingerprint not in base.superseded_seeds
    assert set(base.superseded_seeds) <= {*rec.superseded_seeds, rec.seed_fingerprint}
    assert len(base.superseded_seeds) <= MAX_SUPERSEDED_SEEDS
    if len(rec.superseded_seeds) < MAX_SUPERSEDED_SEEDS:
        assert set(rec.superseded_seeds) <= set(base.superseded_seeds)
    assert base.lock_in_use == rec.lock_in_use


def inv_a_new_seed_on_a_newer_schema_is_refused(s: Scenario, d: Decision) -> None:
    f = s.facts
    if f.relation == "new" and not f.young and f.newer_schema:
        assert d.action == "refuse"


def inv_a_good_valid_token_is_used(s: Scenario, d: Decision) -> None:
    """Rule 8, the other way: when nothing calls for a refresh the stored token is handed out."""
    f = s.facts
    if (
        f.has_record
        and f.state == "valid"
        and not f.has_intent
        and f.relation in ("equal", "superseded")
        and f.access_ok
        and f.refresh_ok
        and (not f.force or f.satisfied)
        and not f.lock_mismatch
    ):
        assert d.action == "use"


def inv_a_due_token_is_not_used(s: Scenario, d: Decision) -> None:
    f = s.facts
    if f.has_record and (not f.access_ok or not f.refresh_ok):
        assert d.action != "use"


def inv_decide_is_deterministic(s: Scenario, d: Decision) -> None:
    assert decide(s.view, s.seed) == d
    assert decide(s.view, s.seed) == decide(s.view, s.seed.model_copy())


INVARIANTS: list[Callable[[Scenario, Decision], None]] = [
    fn for name, fn in sorted(globals().items()) if name.startswith("inv_") and callable(fn)
]


def check_all(s: Scenario) -> None:
    d = decide(s.view, s.seed)
    for inv in INVARIANTS:
        inv(s, d)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_invariant_holds_for_every_view(s: Scenario) -> None:
    """The main property: all invariants on one decision (2000 generated views)."""
    check_all(s)


#: Properties aimed at one rule each (every invariant is checked; the strategy is narrowed so the
#: rule's corner cases are not diluted).
FOCUSED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_OLD_OR_YOUNG = st.sampled_from(["around", "anywhere", "future"])


@FOCUSED
@given(scenarios(with_record=False))
def test_property_rule1_no_record(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, intent_kind=_OLD_OR_YOUNG))
def test_property_rule2_intents_on_both_sides_of_the_bound(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, relation=st.sampled_from(["superseded", "new"])))
def test_property_rule3_superseded_and_new_seeds(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, state=st.just("reauth_required")))
def test_property_rule4_reauth_required(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, state=st.just("suspect")))
def test_property_rule5_suspect(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, schema=st.sampled_from([NEWER_SCHEMA, RECORD_SCHEMA_VERSION + 5])))
def test_property_rule6_newer_schema(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(scenarios(with_record=True, lock_in_use=_LOCK, lock_explicit=st.just(False)))
def test_property_rule7_lock_kinds_under_lock_auto(s: Scenario) -> None:
    check_all(s)


@FOCUSED
@given(
    scenarios(
        with_record=True,
        state=st.just("valid"),
        intent_kind=st.just("none"),
        relation=st.sampled_from(["equal", "superseded"]),
    )
)
def test_property_rule8_use_around_min_ttl_margin_and_force(s: Scenario) -> None:
    check_all(s)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, min(MAX_SUPERSEDED_SEEDS, len(SEED_FPS) - 1)), _SEED_START)
def test_a_chain_of_reseeds_never_lets_an_earlier_seed_start_over(length: int, start: int) -> None:
    """Re-seed the connection ``length`` times (within what a record remembers): a process still
    seeing any earlier seed never re-seeds from it, and generations only go up."""
    order = [(start + k) % len(SEED_FPS) for k in range(length + 1)]
    rec = TokenRecord.seeded(SEED_SECRETS[order[0]]).model_copy(update={"updated_at": NOW})
    for index in order[1:]:
        d = decide(view(rec, index, min_ttl=0.0, refresh_margin=0.0), seed_for(index))
        assert d.action == "refresh"
        assert d.base is not None
        assert d.base.generation == rec.generation + 1
        rec = d.base
    assert rec.seed_fingerprint == SEED_FPS[order[-1]]
    assert set(rec.superseded_seeds) == {SEED_FPS[i] for i in order[:-1]}
    # now a valid token on it, and every stale process looks at it
    rec = rec.model_copy(
        update={"access_token": ACCESS, "expires_at": NOW + timedelta(hours=1), "refresh_expires_at": None}
    )
    for index in order[:-1]:
        for due in (False, True):
            v = view(rec, index, min_ttl=7200.0 if due else 60.0)
            d = decide(v, seed_for(index))
            assert d.base is not None
            assert d.base.seed_fingerprint == rec.seed_fingerprint
            assert d.base.generation == rec.generation
            assert d.stale_seed
            assert d.action == ("refresh" if due else "use")


# --------------------------------------------------------------------------------------------------
# Table tests: one per rule, named after the behaviour
# --------------------------------------------------------------------------------------------------


def test_no_record_refreshes_from_the_connections_seed() -> None:
    seed = seed_for(3)
    d = decide(view(None, 3), seed)
    assert d.action == "refresh"
    assert d.base is seed


def test_young_intent_of_another_process_means_wait() -> None:
    d = decide(view(record(**intent(timedelta(seconds=10)))), seed_for(0))
    assert d.action == "wait"
    assert "worker-b:4242" in d.reason


def test_young_intent_of_this_process_means_wait_too() -> None:
    d = decide(view(record(**intent(timedelta(seconds=10), by="me:1"))), seed_for(0))
    assert d.action == "wait"


def test_young_intent_waits_even_when_the_connection_was_reseeded() -> None:
    d = decide(view(record(**intent(timedelta(seconds=10))), 7), seed_for(7))
    assert d.action == "wait"
    assert d.reason


def test_young_intent_waits_even_for_a_stale_seed() -> None:
    rec = record(superseded_seeds=(SEED_FPS[9],), **intent(timedelta(seconds=10)))
    assert decide(view(rec, 9), seed_for(9)).action == "wait"


def test_intent_a_millisecond_below_the_bound_waits() -> None:
    d = decide(view(record(**intent(timedelta(seconds=120) - ms(1)))), seed_for(0))
    assert d.action == "wait"


def test_intent_exactly_at_the_bound_is_replayed() -> None:
    rec = record(**intent(timedelta(seconds=120)))
    d = decide(view(rec), seed_for(0))
    assert d.action == "replay"
    assert d.base == rec


def test_intent_past_the_bound_is_replayed_from_the_stored_record() -> None:
    rec = record(**intent(timedelta(hours=1)))
    d = decide(view(rec), seed_for(0))
    assert d.action == "replay"
    assert d.base == rec
    assert d.reason


def test_future_dated_intent_counts_as_just_written() -> None:
    """Clock skew: an intent dated after ``now`` is young however far in the future."""
    for ahead in (ms(1), timedelta(seconds=10), timedelta(hours=5)):
        d = decide(view(record(**intent(-ahead))), seed_for(0))
        assert d.action == "wait", ahead


def test_stale_intent_with_a_new_seed_reseeds() -> None:
    rec = record(**intent(timedelta(hours=1)))
    d = decide(view(rec, 4), seed_for(4))
    assert d.action == "refresh"
    assert d.base is not None
    assert d.base.seed_fingerprint == SEED_FPS[4]


def test_new_seed_reseeds_after_the_record() -> None:
    rec = record(generation=41, superseded_seeds=(SEED_FPS[1], SEED_FPS[2]), lock_in_use="file")
    seed = seed_for(5)
    d = decide(view(rec, 5), seed)
    assert d.action == "refresh"
    assert d.base is not None
    assert d.base.generation == 42
    assert d.base.seed_fingerprint == SEED_FPS[5]
    assert d.base.refresh_token == seed.refresh_token
    assert d.base.superseded_seeds == (SEED_FPS[1], SEED_FPS[2], SEED_FPS[0])
    assert d.base.lock_in_use == "file"


def test_new_seed_resolves_reauth_required() -> None:
    rec = record(state="reauth_required", reason="invalid_grant")
    d = decide(view(rec, 6), seed_for(6))
    assert d.action == "refresh"
    assert d.base is not None
    assert d.base.state == "valid"
    assert d.base.generation == rec.generation + 1


def test_new_seed_on_a_record_without_seed_fingerprint_reseeds() -> None:
    rec = record(seed_fingerprint=None)
    d = decide(view(rec, 2), seed_for(2))
    assert d.action == "refresh"
    assert d.base is not None
    assert d.base.superseded_seeds == ()
    assert d.base.generation == rec.generation + 1


def test_stale_seed_uses_the_record_and_is_flagged() -> None:
    rec = record(superseded_seeds=(SEED_FPS[9],))
    d = decide(view(rec, 9), seed_for(9))
    assert d.action == "use"
    assert d.base == rec
    assert d.stale_seed


def test_stale_seed_never_starts_over_from_its_seed_when_the_token_is_due() -> None:
    rec = record(superseded_seeds=(SEED_FPS[9],), expires_at=NOW + timedelta(seconds=5))
    d = decide(view(rec, 9), seed_for(9))
    assert d.action == "refresh"
    assert d.base == rec
    assert d.stale_seed


def test_stale_seed_with_reauth_required_refuses_as_stale_seed() -> None:
    rec = record(superseded_seeds=(SEED_FPS[9],), state="reauth_required", reason="invalid_grant")
    d = decide(view(rec, 9), seed_for(9))
    assert d.action == "refuse"
    assert d.refuse == "stale_seed"
    assert "invalid_grant" in d.reason


def test_reauth_required_refuses_without_calling_the_vendor() -> None:
    rec = record(state="reauth_required", reason="invalid_grant: revoked")
    d = decide(view(rec), seed_for(0))
    assert d.action == "refuse"
    assert d.refuse == "reauth_required"
    assert "invalid_grant: revoked" in d.reason


def test_reauth_required_without_reason_still_explains() -> None:
    d = decide(view(record(state="reauth_required")), seed_for(0))
    assert d.action == "refuse"
    assert d.reason.strip()


def test_reauth_required_is_retried_on_request() -> None:
    rec = record(state="reauth_required")
    d = decide(view(rec, retry_rejected=True), seed_for(0))
    assert d.action == "refresh"
    assert d.base == rec


def test_reauth_required_with_a_crashed_intent_is_not_replayed() -> None:
    """Rule 4 over rule 2: a stale intent on a reauth_required record (a crashed
    ``--retry-rejected`` run) must not make a plain call present the rejected token again."""
    rec = record(state="reauth_required", reason="invalid_grant", **intent(timedelta(hours=1)))
    d = decide(view(rec), seed_for(0))
    assert d.action == "refuse", d


def test_suspect_record_is_refreshed_not_used() -> None:
    rec = record(state="suspect", reason="401 on a fresh token")
    d = decide(view(rec), seed_for(0))
    assert d.action == "refresh"
    assert d.base == rec


def test_suspect_record_with_force_satisfied_is_still_not_used() -> None:
    rec = record(state="suspect", generation=9)
    d = decide(view(rec, force=True, satisfied_above=3), seed_for(0))
    assert d.action == "refresh"


def test_newer_schema_valid_record_is_used_read_only() -> None:
    rec = record(schema_version=NEWER_SCHEMA)
    d = decide(view(rec), seed_for(0))
    assert d.action == "use"
    assert d.read_only


def test_newer_schema_due_record_is_never_written() -> None:
    rec = record(schema_version=NEWER_SCHEMA, expires_at=NOW)
    d = decide(view(rec), seed_for(0))
    assert d.action == "refuse"
    assert d.refuse == "newer_schema"
    assert d.read_only


@pytest.mark.parametrize(
    "update",
    [
        {"state": "suspect"},
        {"state": "reauth_required"},
        intent(timedelta(hours=1)),
    ],
    ids=["suspect", "reauth_retry", "stale_intent"],
)
def test_newer_schema_is_never_refreshed_or_replayed(update: dict[str, object]) -> None:
    rec = record(schema_version=NEWER_SCHEMA, **update)
    d = decide(view(rec, retry_rejected=True), seed_for(0))
    assert d.action == "refuse"
    assert d.refuse == "newer_schema"


def test_newer_schema_with_a_new_seed_is_not_reseeded() -> None:
    d = decide(view(record(schema_version=NEWER_SCHEMA), 3), seed_for(3))
    assert d.action == "refuse"
    assert d.refuse == "newer_schema"


def test_older_schema_record_is_written_as_usual() -> None:
    rec = record(schema_version=1, expires_at=NOW)
    d = decide(view(rec), seed_for(0))
    assert d.action == "refresh"


@pytest.mark.parametrize(
    ("stored", "mine"),
    [
        ("redis://cache:6379/0", "file"),
        ("file", "postgres://db:5432/airflow"),
        ("postgres://db:5432/airflow", "rediss://cache:6380/1"),
    ],
)
def test_lock_mismatch_under_lock_auto_refuses(stored: str, mine: str) -> None:
    rec = record(lock_in_use=stored, expires_at=NOW)
    d = decide(view(rec, lock=mine, lock_explicit=False), seed_for(0))
    assert d.action == "refuse"
    assert d.refuse == "lock_mismatch"
    assert stored in d.reason


def test_lock_mismatch_with_an_explicit_lock_proceeds() -> None:
    rec = record(lock_in_use="redis://cache:6379/0")
    d = decide(view(rec, lock="file", lock_explicit=True), seed_for(0))
    assert d.action == "use"


def test_redis_and_rediss_are_the_same_lock_kind() -> None:
    rec = record(lock_in_use="rediss://cache:6380/1")
    d = decide(view(rec, lock="redis://other:6379/2", lock_explicit=False), seed_for(0))
    assert d.action == "use"


def test_lock_mismatch_under_auto_blocks_a_reseed() -> None:
    """Rule 7 over rule 3: starting over from a new seed writes the record too, so a process that
    would coordinate it with another kind of lock must refuse that as well."""
    rec = record(lock_in_use="redis://cache:6379/0")
    d = decide(view(rec, 4, lock="file", lock_explicit=False), seed_for(4))
    assert d.action == "refuse", d
    assert d.refuse == "lock_mismatch"


def test_lock_mismatch_still_waits_for_a_young_intent() -> None:
    rec = record(lock_in_use="redis://cache:6379/0", **intent(timedelta(seconds=1)))
    d = decide(view(rec, lock="file", lock_explicit=False), seed_for(0))
    assert d.action == "wait"


def test_valid_token_is_used() -> None:
    rec = record()
    d = decide(view(rec), seed_for(0))
    assert d.action == "use"
    assert d.base == rec
    assert not d.stale_seed
    assert not d.read_only


def test_access_token_exactly_at_min_ttl_is_used() -> None:
    d = decide(view(record(expires_at=NOW + timedelta(seconds=60))), seed_for(0))
    assert d.action == "use"


def test_access_token_a_millisecond_below_min_ttl_is_refreshed() -> None:
    rec = record(expires_at=NOW + timedelta(seconds=60) - ms(1))
    d = decide(view(rec), seed_for(0))
    assert d.action == "refresh"
    assert d.base == rec


@pytest.mark.parametrize(
    "update", [{"access_token": None}, {"expires_at": None}], ids=["no_token", "no_expiry"]
)
def test_missing_access_token_or_expiry_is_refreshed(update: dict[str, object]) -> None:
    assert decide(view(record(**update)), seed_for(0)).action == "refresh"


def test_refresh_token_exactly_at_the_margin_is_used() -> None:
    d = decide(view(record(refresh_expires_at=NOW + timedelta(seconds=300))), seed_for(0))
    assert d.action == "use"


def test_refresh_token_inside_the_margin_is_refreshed() -> None:
    rec = record(refresh_expires_at=NOW + timedelta(seconds=300) - ms(1))
    assert decide(view(rec), seed_for(0)).action == "refresh"


def test_refresh_token_without_expiry_never_lapses() -> None:
    rec = record(refresh_expires_at=None)
    assert decide(view(rec, refresh_margin=10**9), seed_for(0)).action == "use"


def test_missing_refresh_token_is_not_used() -> None:
    assert decide(view(record(refresh_token=None)), seed_for(0)).action != "use"


def test_force_refreshes_a_valid_token() -> None:
    rec = record()
    d = decide(view(rec, force=True), seed_for(0))
    assert d.action == "refresh"
    assert d.base == rec


def test_force_is_satisfied_by_a_newer_generation() -> None:
    d = decide(view(record(generation=6), force=True, satisfied_above=5), seed_for(0))
    assert d.action == "use"


def test_force_is_not_satisfied_by_the_same_generation() -> None:
    d = decide(view(record(generation=5), force=True, satisfied_above=5), seed_for(0))
    assert d.action == "refresh"


def test_satisfied_generation_does_not_excuse_a_due_token() -> None:
    rec = record(generation=6, expires_at=NOW)
    d = decide(view(rec, force=True, satisfied_above=5), seed_for(0))
    assert d.action == "refresh"


def test_decide_is_deterministic() -> None:
    v = view(record(**intent(timedelta(hours=1))), 3)
    seed = seed_for(3)
    assert decide(v, seed) == decide(v, seed)
