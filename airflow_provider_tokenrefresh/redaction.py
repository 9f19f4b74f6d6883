"""Keeping secrets out of text: URLs, error bodies, log records and exception messages.

Two complementary tools:

* :func:`redact_url` hides the values of query parameters and userinfo whose *names* look
  sensitive (``refresh_token=...`` in the query-basic dialect), whatever the values are.
* :class:`Redactor` replaces known secret *values* (a refresh token the vendor echoed back in an
  ``error_description``) wherever they appear, also in their URL-encoded forms.

A process-wide redactor (:data:`REDACTOR`) collects every secret the provider handles, and a
logging filter on the ``httpx``/``httpcore`` loggers applies both tools, because httpx logs every
request URL at INFO level.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterable

MASK = "***"

#: A query parameter or field whose name contains one of these words has its value hidden.
SENSITIVE_WORDS = (
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "authentication",
    "api_key",
    "apikey",
    "credential",
    "signature",
)

# Values shorter than this are not treated as secrets: masking "0" or "ok" everywhere would ruin
# every message and protect nothing (Airflow's masker draws the same line at 5 characters).
MIN_SECRET_LENGTH = 5

_QUERY_PAIR = re.compile(r"(?P<name>[^&=?#\s]+)=(?P<value>[^&#\s]*)")


def is_sensitive_name(name: str) -> bool:
    """Return whether a field or parameter name suggests its value is secret."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def redact_query(query: str) -> str:
    """Hide the values of sensitive parameters in a URL query string."""

    def _sub(match: re.Match[str]) -> str:
        if is_sensitive_name(match.group("name")) and match.group("value"):
            return f"{match.group('name')}={MASK}"
        return match.group(0)

    return _QUERY_PAIR.sub(_sub, query)


def redact_url(url: object) -> str:
    """Return ``url`` as text with sensitive query values and any userinfo password hidden."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return redact_query(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{MASK}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), parts.fragment))


def encoded_forms(secret: str) -> tuple[str, ...]:
    """The ways a secret is spelled when it travels: as is, URL-encoded (both styles), JSON-escaped
    (``/`` may become ``\\/``, non-ASCII ``\\uXXXX``) and Base64 (standard and URL-safe)."""
    import base64
    import json

    escaped = json.dumps(secret)[1:-1]
    raw = secret.encode()
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    for b64 in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        # A secret embedded in a longer Base64 text (``Basic base64(id:secret)``) is not found this
        # way; the client registers the whole header value too.
        forms.add(b64)
        forms.add(b64.rstrip("="))
    return tuple(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


class Redactor:
    """Replaces known secret values in text.

    Thread-safe. Each secret is also replaced in its URL-encoded forms, since a vendor may echo a
    token from a query string or form body. Adding is O(1) and redaction is one C-level substring
    search per remembered value (no regex rebuilt per secret: a process that handles thousands of
    tokens, like a fan-out keeper or the triggerer, must not slow down quadratically). At most
    ``max_secrets`` values are remembered; the oldest are forgotten first.
    """

    def __init__(self, secrets: Iterable[str | None] = (), *, max_secrets: int = 20_000) -> None:
        self._lock = threading.Lock()
        # secret -> (its forms, the add count when it was last refreshed), oldest first
        self._values: dict[str, tuple[tuple[str, ...], int]] = {}
        self._max = max_secrets
        self._adds = 0
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Remember secret values to hide from now on; short or empty values are ignored.

        No lock is taken unless the bound is passed (each step is one dict operation, atomic on
        its own): with 64 fan-out threads, a lock taken on every add was where most of them
        waited, since every hand-over of a contended lock waits for the GIL too. A value already
        remembered costs a dict lookup. It is moved to the newest end again once it has aged past
        half of ``max_secrets`` adds, so what is still in use is never the first forgotten.
        """
        values = self._values
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_LENGTH:
                continue
            known = values.get(secret)
            if known is not None and self._adds - known[1] < self._max // 2:
                continue
            forms = known[0] if known is not None else encoded_forms(secret)
            self._adds += 1  # not exact under threads; it only ages entries
            if known is not None:
                values.pop(secret, None)
            values[secret] = (forms, self._adds)
            if len(values) > self._max:
                self._evict()

    def _evict(self) -> None:
        with self._lock:
            values = self._values
            while len(values) > self._max:
                try:
                    del values[next(iter(values))]
                except (StopIteration, KeyError, RuntimeError):  # another thread changed it meanwhile
                    continue

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret, in every encoded form, replaced by ``***``."""
        if not text or not self._values:
            return text
        known = list(self._values.values())  # a snapshot (one C-level copy); the scan runs on it
        hits = {form for forms, _ in known for form in forms if form in text}
        # Longest first, so a secret that contains another is hidden whole.
        for value in sorted(hits, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"


#: Process-wide redactor: every token the provider receives or sends is added here.
REDACTOR = Redactor()


def remember_secrets(*secrets: str | None) -> None:
    """Add secrets to the process-wide redactor (and so to the httpx log filter)."""
    REDACTOR.add(*secrets)


def redact(text: str, *extra_secrets: str | None) -> str:
    """Redact known secrets, ``extra_secrets`` and sensitive URL query values from ``text``."""
    result = REDACTOR.redact(text)
    if extra_secrets:
        result = Redactor(extra_secrets).redact(result)
    return redact_query(result) if "=" in result else result


class RedactingFilter(logging.Filter):
    """Logging filter that redacts secrets and sensitive URL parameters from a record.

    httpx logs ``HTTP Request: POST https://host/path?refresh_token=... "HTTP/1.1 200 OK"`` at INFO:
    the query-basic dialect would leak its refresh token there without this filter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drop the record."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must still not leak
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = RedactingFilter()
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def install_log_filter(logger_names: Iterable[str] = ("httpx", "httpcore")) -> None:
    """Attach :class:`RedactingFilter` to the HTTP client loggers once per process."""
    global _INSTALLED
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        for name in logger_names:
            logging.getLogger(name).addFilter(_FILTER)
        _INSTALLED = True
