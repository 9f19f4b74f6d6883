"""Find any 12-character piece of any secret, in any of its encoded forms, in a set of texts.

A secret of 2,000 characters has about 2,000 pieces per form; a deployment writes megabytes. The
scan indexes every piece of every form in a set and slides a 12-character window only over the
runs of characters a form can contain (most log text is short words and is skipped at C speed).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_tokenrefresh.redaction import encoded_forms

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

PIECE = 12

# Every character an encoded form of a canary can hold: Base64 (standard and URL-safe), "=",
# percent-encoding, JSON escapes ("\/", "\uXXXX"), the canaries' own alphabet.
_RUN = re.compile(r"[A-Za-z0-9+/=%\\_.~-]{" + str(PIECE) + ",}")


def shifted_base64(secret: str, prefix: str = "") -> list[str]:
    """Base64 (standard and URL-safe) of ``secret`` at each of the three byte alignments it can
    have inside a longer Base64 text (``Basic base64(client_id:secret)``), the part that depends
    on the secret only."""
    forms = []
    raw = secret.encode()
    for shift in range(3):
        head = (prefix.encode() if prefix else b"") + b"x" * shift
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            whole = encode(head + raw).decode()
            # Drop the quanta that mix in the head's bytes; keep the rest, "=" padding included.
            skip = -(-len(head) // 3) * 4
            forms.append(whole[skip:])
    return [f for f in forms if len(f) >= PIECE]


def all_forms(secret: str, client_id: str | None = None) -> dict[str, str]:
    """Form name → text of every way ``secret`` may be spelled in a message."""
    forms = {f"encoded_forms[{i}]": form for i, form in enumerate(sorted(encoded_forms(secret)))}
    for i, form in enumerate(shifted_base64(secret)):
        forms[f"base64 shifted[{i}]"] = form
    if client_id is not None:
        header = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        forms["Basic header"] = header
    return forms


def pieces(text: str, size: int = PIECE) -> set[str]:
    """Every ``size``-character piece of ``text`` (the whole text when shorter)."""
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@dataclass(frozen=True)
class Leak:
    """Pieces of one secret found in one place (the pieces themselves are not shown)."""

    location: str
    secret: str
    form: str
    count: int
    context: str

    def __str__(self) -> str:
        return f"{self.location}: {self.count} piece(s) of {self.secret} ({self.form}) near: {self.context!r}"


class Canaries:
    """The secrets to look for, each with a label, indexed by every piece of every form."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self._index: dict[str, tuple[str, str]] = {}
        self.forms_indexed = 0

    def add(self, label: str, secret: str, client_id: str | None = None) -> None:
        if not secret or secret in self.labels:
            return
        self.labels[secret] = label
        for form_name, form in all_forms(secret, client_id).items():
            self.forms_indexed += 1
            for piece in pieces(form):
                self._index.setdefault(piece, (label, form_name))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def piece_count(self) -> int:
        return len(self._index)

    def scan(self, location: str, text: str) -> list[Leak]:
        found: dict[tuple[str, str], list[int]] = {}
        index = self._index
        for run in _RUN.finditer(text):
            chunk = run.group(0)
            base = run.start()
            for i in range(len(chunk) - PIECE + 1):
                hit = index.get(chunk[i : i + PIECE])
                if hit is not None:
                    found.setdefault(hit, []).append(base + i)
        leaks = []
        for (label, form), positions in sorted(found.items()):
            at = positions[0]
            context = text[max(0, at - 120) : at] + "<PIECE...>"
            leaks.append(Leak(location, label, form, len(positions), context))
        return leaks

    def scan_all(self, texts: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[Leak]:
        items = texts.items() if hasattr(texts, "items") else texts
        return [leak for location, text in items for leak in self.scan(location, text)]
