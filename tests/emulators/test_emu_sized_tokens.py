"""``token_lengths``/``token_alphabet``: tokens of a chosen length and alphabet, seeds and rotations."""

from __future__ import annotations

import pytest

from airflow_provider_tokenrefresh.testing import EMULATORS
from airflow_provider_tokenrefresh.testing.vendors import LONG_TOKEN_ALPHABET

from .conftest import StartEmulator


@pytest.mark.parametrize("name", sorted(EMULATORS))
def test_every_token_issued_has_the_chosen_length_and_alphabet(start: StartEmulator, name: str) -> None:
    emu = start(name, token_lengths={"rt": 200, "at": 2000})
    seed = emu.issue_tokens()
    result = emu.refresh(seed.refresh_token, bound_access_token=seed.access_token)
    assert result.outcome == "ok" and result.tokens is not None
    for token, length in (
        (seed.refresh_token, 200),
        (seed.access_token, 2000),
        (result.tokens.refresh_token, 200),
        (result.tokens.access_token, 2000),
    ):
        assert len(token) == length
        assert set(token[7:]) <= set(LONG_TOKEN_ALPHABET)
    assert result.tokens.refresh_token != seed.refresh_token  # still random, still rotated
    # Over 1,800 random characters of 65: "+", "/" and "=" all appear.
    assert {"+", "/", "="} <= set(seed.access_token[7:])


def test_a_kind_left_out_keeps_the_default_form(start: StartEmulator) -> None:
    emu = start("oauth2_basic", token_lengths={"rt": 454})
    seed = emu.issue_tokens()
    assert len(seed.refresh_token) == 454 and seed.refresh_token.startswith("emu+rt/")
    assert seed.access_token.startswith("emu-at-")


def test_a_custom_alphabet(start: StartEmulator) -> None:
    alphabet = "0123456789abcdef%+/="
    emu = start("query_basic", token_lengths={"rt": 100}, token_alphabet=alphabet)
    assert set(emu.issue_tokens().refresh_token[7:]) <= set(alphabet)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token_lengths": {"xx": 100}}, "keys are 'at' and 'rt'"),
        ({"token_lengths": {"rt": 11}}, "at least 12"),
        ({"token_lengths": {"rt": 100}, "token_alphabet": "ab"}, "16 distinct"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EMULATORS["oauth2_basic"](**options)
