"""The error taxonomy of the provider.

Every error a refresh can end in is one of five kinds, because each kind asks for a different
reaction from the coordinator and from the person on call:

* :class:`ConfigurationError` — the connection or dialect is wrong (bad URL, bad client
  credentials, bad spec). Retrying does not help; a person must fix the configuration.
* :class:`RefreshTokenRejected` — the vendor says the refresh token is dead (``invalid_grant`` or
  the vendor's equivalent). After a re-read of the store shows nobody else rotated it, a person
  must re-authorize and re-seed the connection.
* :class:`TransientRefreshError` — the vendor or network failed in a way that says the refresh did
  not happen (connection refused, 5xx, 429). Trying again later is safe.
* :class:`RefreshOutcomeUnknown` — the request was sent but no answer came back (read timeout,
  dropped connection). The vendor may have rotated the refresh token. Never retry blindly: re-read
  the store first.
* :class:`MalformedResponseError` — an answer came back that cannot be understood. If it was a
  success status the vendor may have rotated the token, so it is also an unknown outcome.

Messages name the dialect, the connection (when known) and the redacted endpoint, and never
contain a secret: every message passes through the redactor before it is built.
"""

from __future__ import annotations


class TokenRefreshError(Exception):
    """Base class of every error the provider raises.

    :param message: what happened, already redacted.
    :param dialect: name of the dialect in use, if known.
    :param endpoint: redacted URL of the refresh endpoint, if known.
    :param conn_id: Airflow connection id, if known.
    :param vendor_code: the vendor's own error code (``invalid_grant``, ``50400``, ``1``...), if any.
    :param status_code: HTTP status of the vendor's answer, if any.
    """

    #: Short machine-readable kind, stable across releases; used in stored records and status output.
    kind = "error"
    #: Whether trying the same refresh again later may succeed without a person's help.
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        dialect: str | None = None,
        endpoint: str | None = None,
        conn_id: str | None = None,
        vendor_code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message
        self.dialect = dialect
        self.endpoint = endpoint
        self.conn_id = conn_id
        self.vendor_code = vendor_code
        self.status_code = status_code
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.conn_id:
            where.append(f"connection {self.conn_id!r}")
        if self.dialect:
            where.append(f"dialect {self.dialect}")
        if self.endpoint:
            where.append(self.endpoint)
        prefix = f"[{', '.join(where)}] " if where else ""
        return f"{prefix}{self.message}"

    def with_conn_id(self, conn_id: str) -> TokenRefreshError:
        """Return the same error, naming the Airflow connection it concerns."""
        if self.conn_id == conn_id:
            return self
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.conn_id = conn_id
        Exception.__init__(clone, clone._render())
        return clone

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing, deferral).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[TokenRefreshError], state: dict[str, object]) -> TokenRefreshError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._render())
    return error


class ConfigurationError(TokenRefreshError):
    """The connection, dialect spec or client credentials are wrong; a person must fix them."""

    kind = "configuration"


class RefreshTokenRejected(TokenRefreshError):
    """The vendor rejected the refresh token: re-authorization is needed unless someone else rotated it."""

    kind = "reauth_required"


class TransientRefreshError(TokenRefreshError):
    """The refresh did not happen for a passing reason (network, 5xx, 429); trying later is safe."""

    kind = "transient"
    retryable = True


class RefreshOutcomeUnknown(TokenRefreshError):
    """The request was sent but its answer was lost: the vendor may have rotated the refresh token."""

    kind = "outcome_unknown"


class MalformedResponseError(TokenRefreshError):
    """The vendor's answer could not be understood (not JSON, missing fields, too large)."""

    kind = "malformed_response"


class StoreError(TokenRefreshError):
    """Reading or writing the token store failed."""

    kind = "store"
    retryable = True


class StoreConflict(StoreError):
    """A compare-and-set write lost: another writer stored a newer record first."""

    kind = "store_conflict"


class LockTimeout(TokenRefreshError):
    """The per-connection refresh lock could not be taken in time; no refresh was attempted."""

    kind = "lock_timeout"
    retryable = True


class RefreshInFlight(LockTimeout):
    """Another process's refresh of this connection is in flight (its intent is young): this one
    waited its bounded time and sent nothing."""

    kind = "refresh_in_flight"


class LockLost(TokenRefreshError):
    """The lock's lease was lost (expired, session killed) before the vendor call: none was made."""

    kind = "lock_lost"
    retryable = True


class RecordTakenOver(StoreError):
    """A refresh's answer arrived after another process had taken the record over (this holder was
    frozen past the stale bound). Both are kept on the record, which is marked suspect."""

    kind = "taken_over"
    retryable = False


class AmbiguousRejection(TokenRefreshError):
    """An answer that may mean a dead refresh token or something else (a gateway's non-JSON 401/403,
    a code the vendor document leaves open): retried a bounded number of times before it is
    believed as :class:`RefreshTokenRejected`."""

    kind = "ambiguous_rejection"
    retryable = True
