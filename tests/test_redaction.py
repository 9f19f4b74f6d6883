"""Redaction: URL parameters by name, known values in every encoding, bounded memory."""

from __future__ import annotations

from airflow_provider_tokenrefresh.redaction import Redactor, redact_url


def test_sensitive_query_values_and_userinfo_are_hidden() -> None:
    url = "https://user:pw12345@vendor.example/api/refreshToken.do?grant_type=refresh_token&refresh_token=abc.def&x=1"
    assert redact_url(url) == (
        "https://user:***@vendor.example/api/refreshToken.do?grant_type=refresh_token&refresh_token=***&x=1"
    )


def test_known_values_are_hidden_in_raw_and_url_encoded_forms_longest_first() -> None:
    redactor = Redactor(["tok+en/with=chars", "tok+en"])
    text = "a tok+en/with=chars b tok%2Ben%2Fwith%3Dchars c tok+en d"
    assert redactor.redact(text) == "a *** b *** c *** d"


def test_short_values_are_not_secrets() -> None:
    assert Redactor(["0", "ok", "1234"]).redact("0 ok 1234") == "0 ok 1234"


def test_memory_is_bounded_oldest_forgotten_first() -> None:
    redactor = Redactor(max_secrets=2)  # plain values: one remembered form each
    redactor.add("first-secret", "second-secret", "third-secret")
    assert len(redactor) == 2
    assert "third-secret" in redactor
    assert "first-secret" not in redactor
    assert redactor.redact("second-secret third-secret") == "*** ***"


def test_threads_adding_and_redacting_at_once_keep_the_bound_and_the_values_in_use() -> None:
    """``add`` takes no lock below the bound (a fan-out's threads add on every refresh): eight
    threads adding 400 values each past a bound of 1,000 end with exactly 1,000 remembered, and a
    value every thread re-adds all along (a client secret) is hidden at every step and at the end."""
    import threading

    redactor = Redactor(max_secrets=1000)
    live = "live-secret-used-by-every-refresh"
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(400):
                redactor.add(f"thread{n}-secret-{i:04d}", live)
                assert redactor.redact(f"x {live} y") == "x *** y"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(redactor) == 1000
    assert live in redactor
    redactor.add("added-after-the-threads")
    assert len(redactor) == 1000
    assert redactor.redact("added-after-the-threads and " + live) == "*** and ***"
