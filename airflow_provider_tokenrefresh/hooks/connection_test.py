"""The Connections UI's Test button (``TokenRefreshHook.test_connection``): harmless on a
connection in use. Airflow runs it in the api-server under a random transient conn_id."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_tokenrefresh.hooks.tokenrefresh import TokenRefreshHook
    from airflow_provider_tokenrefresh.keeper import TokenKeeper


def run_connection_test(hook: TokenRefreshHook) -> tuple[bool, str]:
    """The UI's Test button: harmless on a connection in use.

    Airflow runs the test under a random transient conn_id; the connection it tests is found
    (:func:`conn_id_under_test`) so that its real record is read. On a connection with a stored
    record nothing stored or spent is ever presented: the record's state is reported and the
    endpoint is probed with a deliberately unknown refresh token (configuration, TLS,
    reachability and — where the vendor's answers tell them apart — the client credentials).
    Only a connection without any record is refreshed once, stored under its real key.
    """
    from airflow_provider_tokenrefresh.redaction import redact

    real_id = conn_id_under_test(hook.tokenrefresh_conn_id)
    try:
        settings = hook.settings
        if real_id != settings.conn_id:
            settings = settings.model_copy(update={"conn_id": real_id})
            hook.__dict__["settings"] = settings
        keeper = hook.keeper
        stored, _ = keeper.store.read(keeper.key)
    except Exception as exc:  # noqa: BLE001 - the UI shows the (redacted) message
        return False, redact(str(exc))
    if stored is None:
        try:
            status = hook.refresh(min_ttl=hook.min_ttl)
        except Exception as exc:  # noqa: BLE001 - the UI shows the (redacted) message
            return False, redact(str(exc))
        sealed_keys = getattr(keeper.store, "sealed_keys", None) or {}
        return True, (
            f"New connection {real_id}: token refreshed once and stored ({keeper.store.name} store, "
            f"key {sealed_keys.get(keeper.key, keeper.key)}): dialect {status['dialect']}, generation {status['generation']}, "
            f"expires at {status['expires_at']}"
        )
    ok, probed = probe(keeper)
    facts = [
        f"Connection {real_id} is in use: stored record generation {stored.generation}, state {stored.state}, "
        f"access token expires at {stored.expires_at.isoformat(timespec='seconds') if stored.expires_at else 'unknown'}"
    ]
    if stored.refresh_started_at is not None:
        facts.append(f"refresh in flight on {stored.refresh_started_by} since {stored.refresh_started_at}")
    if stored.reason:
        facts.append(f"reason: {stored.reason}")
    seed = keeper.seed.fingerprint
    if seed != stored.seed_fingerprint:
        facts.append(
            "the form's refresh token is older than the stored one (superseded)"
            if seed in stored.superseded_seeds
            else "the form carries a new refresh token: it is used from the next refresh on, once saved"
        )
    facts += stored.warnings()
    facts.append(probed)
    facts.append("No stored or spent refresh token was sent.")
    return ok and stored.state == "valid", redact(". ".join(facts))


def probe(keeper: TokenKeeper) -> tuple[bool, str]:
    """One refresh with a made-up token: what the vendor's answer says about the configuration."""
    import dataclasses
    import secrets

    from airflow_provider_tokenrefresh.client import RefreshClient
    from airflow_provider_tokenrefresh.errors import ConfigurationError, RefreshTokenRejected

    client = keeper.client
    probe = RefreshClient(client.spec, dataclasses.replace(client.settings, max_attempts=1))
    made_up = "tokenrefresh-probe-" + secrets.token_hex(16)
    try:
        probe.refresh(made_up, "tokenrefresh-probe-access-" + secrets.token_hex(8))
    except RefreshTokenRejected as exc:
        return True, (
            f"Probe: the endpoint answered (HTTP {exc.status_code}) and rejected a deliberately unknown "
            "refresh token as it should: URL, TLS and client credentials look right"
        )
    except ConfigurationError as exc:
        return False, f"Probe: the vendor refused the request: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - reported, never raised to the UI
        return (
            False,
            f"Probe: the endpoint could not be checked: {getattr(exc, 'message', type(exc).__name__)}",
        )
    return False, "Probe: the vendor ACCEPTED a made-up refresh token: check the endpoint and dialect"


def conn_id_under_test(conn_id: str) -> str:
    """The connection the api-server's Test route is testing when it runs a hook under a random
    transient conn_id (Airflow 3.3: ``transient_conn_id`` and ``test_body`` in the route's frame);
    ``conn_id`` itself otherwise."""
    import sys

    frame = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            break
        local = frame.f_locals
        body = local.get("test_body")
        if local.get("transient_conn_id") == conn_id and getattr(body, "connection_id", None):
            return str(getattr(body, "connection_id"))  # noqa: B009 - body may be any object
        frame = frame.f_back  # type: ignore[assignment]
    return conn_id
