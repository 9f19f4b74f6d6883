"""Grace-window recovery (extra ``reuse_grace``): a lost rotation answer is asked again with the
same refresh token while the vendor's reuse window is open, and never otherwise.

The vendor side is the emulators' refresh engine with the industry's variants (``same_pair``,
``new_pair``, ``previous_only``; strict reuse detection stays the default); the keeper side is a
real keeper talking HTTP to a real emulator whose answer is lost (connection dropped after the
refresh was processed, or held past the client's read timeout). Outcomes are judged at the vendor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_tokenrefresh.errors import RefreshOutcomeUnknown, RefreshTokenRejected
from airflow_provider_tokenrefresh.lease import MIN_ROUND_TRIP, grace_retry_allowed
from airflow_provider_tokenrefresh.stores import FileTokenStore
from airflow_provider_tokenrefresh.testing import ManualClock, OAuth2BasicEmulator
from airflow_provider_tokenrefresh.testing.state import GRACE_MODES

from .conftest import EmulatorFactory, client_for
from .keeperhelp import make_keeper

# -- the decision -------------------------------------------------------------------------------------


def test_a_retry_must_land_inside_the_window() -> None:
    assert grace_retry_allowed(0.1, 0.2, 30)
    assert grace_retry_allowed(28.0, 1.0, 30)
    assert not grace_retry_allowed(29.0, 1.0, 30)  # 29 + 1 is not below 30
    assert not grace_retry_allowed(29.9, 0.0, 30)  # a round trip is never assumed below the minimum
    assert grace_retry_allowed(29.0 - MIN_ROUND_TRIP, 0.0, 30)
    assert not grace_retry_allowed(0.0, 0.1, 0)  # strict vendors (the default): never
    assert not grace_retry_allowed(-1.0, 0.1, 30)  # a clock that went backwards proves nothing


# -- the vendor's variants ------------------------------------------------------------------------------


def _vendor(mode: str | None, clock: ManualClock) -> OAuth2BasicEmulator:
    if mode is None:
        return OAuth2BasicEmulator(clock=clock)
    return OAuth2BasicEmulator(clock=clock, reuse_grace=30, grace_mode=mode)  # type: ignore[arg-type]


def test_strict_is_the_default_and_a_retired_token_revokes_the_family() -> None:
    clock = ManualClock()
    emu = _vendor(None, clock)
    seed = emu.issue_tokens()
    assert emu.refresh(seed.refresh_token).outcome == "ok"
    clock.advance(1)
    again = emu.refresh(seed.refresh_token)
    assert (again.outcome, again.reason) == ("invalid_grant", "reused")
    assert emu.families_revoked == 1


def test_same_pair_returns_the_first_answer_again_inside_the_window_only() -> None:
    clock = ManualClock()
    emu = _vendor("same_pair", clock)
    seed = emu.issue_tokens()
    first = emu.refresh(seed.refresh_token).tokens
    clock.advance(29)
    again = emu.refresh(seed.refresh_token)
    assert again.outcome == "ok" and again.tokens == first
    assert first is not None and emu.is_refresh_token_valid(first.refresh_token)
    clock.advance(2)  # 31 s after the rotation
    late = emu.refresh(seed.refresh_token)
    assert (late.outcome, late.reason) == ("invalid_grant", "reused") and emu.families_revoked == 1


def test_new_pair_issues_a_new_pair_in_the_same_chain() -> None:
    clock = ManualClock()
    emu = _vendor("new_pair", clock)
    seed = emu.issue_tokens()
    first = emu.refresh(seed.refresh_token).tokens
    assert first is not None
    clock.advance(5)
    again = emu.refresh(seed.refresh_token).tokens
    assert again is not None and again.refresh_token != first.refresh_token
    assert again.family_id == first.family_id == seed.family_id
    assert emu.is_refresh_token_valid(again.refresh_token)
    assert not emu.is_refresh_token_valid(first.refresh_token)  # the lost answer's token is retired
    # An older retired token inside its own window is still tolerated by this variant.
    clock.advance(5)
    assert emu.refresh(seed.refresh_token).outcome == "ok"
    assert emu.counters["grace_reuse"] == 2 and emu.families_revoked == 0


def test_previous_only_tolerates_the_last_retired_token_and_no_older_one() -> None:
    clock = ManualClock()
    emu = _vendor("previous_only", clock)
    seed = emu.issue_tokens()
    first = emu.refresh(seed.refresh_token).tokens
    assert first is not None
    second = emu.refresh(first.refresh_token).tokens  # the seed is now two rotations back
    assert second is not None
    clock.advance(1)
    assert emu.refresh(first.refresh_token).outcome == "ok"  # the previous one: tolerated
    old = emu.refresh(seed.refresh_token)
    assert (old.outcome, old.reason) == ("invalid_grant", "reused") and emu.families_revoked == 1


def test_an_unknown_grace_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="grace_mode must be one of"):
        OAuth2BasicEmulator(reuse_grace=30, grace_mode="forgiving")  # type: ignore[arg-type]


# -- the keeper against a real emulator ------------------------------------------------------------------


def _stored_refresh_token(tmp_path: Path) -> str:
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.refresh_token is not None
    return stored.refresh_token.get_secret_value()


@pytest.mark.parametrize("mode", GRACE_MODES)
@pytest.mark.parametrize("fault", ["drop_after", "slow"])
def test_a_lost_answer_is_recovered_inside_the_vendors_window(
    mode: str, fault: str, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic", reuse_grace=30, grace_mode=mode)
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, reuse_grace=30)
    keeper.client = client_for(emu, timeout=0.3)
    # drop_after: processed (rotated), then the connection is closed; slow: processed, the answer
    # held past the client's 0.3 s read timeout.
    emu.inject(fault, **({"delay": 0.8} if fault == "slow" else {}))
    record = keeper.get_valid_token(min_ttl=60)
    assert record.generation == 1 and record.state == "valid"
    assert emu.refresh_requests == 2 and emu.counters["grace_reuse"] == 1
    assert emu.counters.get("invalid_grant", 0) == 0 and emu.families_revoked == 0
    stored = _stored_refresh_token(tmp_path)
    assert emu.is_refresh_token_valid(stored)  # the chain lives at the vendor
    assert record.access_token is not None and emu.is_access_token_valid(
        record.access_token.get_secret_value()
    )


@pytest.mark.parametrize(
    "vendor_grace", [0.0, 30.0], ids=["strict vendor, default setting", "grace vendor, setting left at 0"]
)
def test_without_the_setting_a_lost_answer_is_never_asked_again(
    vendor_grace: float, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic", reuse_grace=vendor_grace, grace_mode="new_pair")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token)  # reuse_grace 0
    emu.inject("drop_after")
    with pytest.raises(RefreshOutcomeUnknown):
        keeper.get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 1 and emu.families_revoked == 0
    assert emu.counters.get("grace_reuse", 0) == 0


def test_outside_the_window_the_token_is_not_sent_again(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = emulator_factory("oauth2_basic", reuse_grace=1.0, grace_mode="new_pair")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, reuse_grace=1.0)
    keeper.client = client_for(emu, timeout=0.5)
    emu.inject("slow", delay=1.0)  # 0.5 s gone + a 1 s round trip (none measured yet) >= 1 s
    with pytest.raises(RefreshOutcomeUnknown):
        keeper.get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 1 and emu.counters.get("grace_reuse", 0) == 0


def test_the_setting_on_a_strict_vendor_is_caught_as_reuse_and_reported(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Why the window is opt-in: a vendor without one treats the resend as reuse."""
    emu = emulator_factory("oauth2_basic")
    seed = emu.issue_tokens()
    keeper = make_keeper(emu, tmp_path, seed.refresh_token, reuse_grace=30)
    emu.inject("drop_after")
    with pytest.raises(RefreshTokenRejected):
        keeper.get_valid_token(min_ttl=60)
    assert emu.refresh_requests == 2 and emu.counters["reuse_detected"] == 1
    stored, _ = FileTokenStore(str(tmp_path / "store")).read("conn")
    assert stored is not None and stored.state == "reauth_required"
