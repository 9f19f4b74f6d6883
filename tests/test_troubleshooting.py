"""docs/troubleshooting.md keeps up with the code: every error type has an entry (by its kind and
class), and every phrase the page quotes as a message is one the provider really prints (found in
a string of the package's source, word for word)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from airflow_provider_tokenrefresh import errors

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "troubleshooting.md"
PACKAGE = ROOT / "airflow_provider_tokenrefresh"


def _sections() -> dict[str, str]:
    """``{heading: body}`` of the page's ``##`` sections."""
    out: dict[str, str] = {}
    for block in re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        out[heading.strip()] = body
    return out


def _quoted_in_bullets(body: str) -> list[str]:
    """Phrases in double quotes inside the section's bullet items (their continuation lines too)."""
    items = re.split(r"^\* ", body, flags=re.M)[1:]
    phrases: list[str] = []
    for item in items:
        bullet = item.split("\n\n", 1)[0]  # the bullet list ends at a blank line
        phrases += [" ".join(p.split()) for p in re.findall(r'"([^"]+)"', bullet)]
    return phrases


def _source_strings() -> list[str]:
    """Every string the package (not its test emulators) can put in a message: literals, and
    f-strings with their fields left as gaps."""
    strings: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        if "testing" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                strings.append(
                    "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
                )
    return [" ".join(s.split()) for s in strings]


def _error_types() -> list[type[errors.TokenRefreshError]]:
    return [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.TokenRefreshError)
    ]


def test_every_error_type_has_an_entry() -> None:
    headings = list(_sections())
    missing = [
        f"{cls.__name__} (kind {cls.kind})"
        for cls in _error_types()
        if not any(h.startswith(f"`{cls.kind}`") and h.endswith(cls.__name__) for h in headings)
    ]
    assert not missing, f"docs/troubleshooting.md has no '## `kind` — Class' section for: {missing}"
    assert len(_error_types()) == len(headings) == 13


def test_every_quoted_message_is_printed_by_the_provider() -> None:
    strings = _source_strings()
    sections = _sections()
    missing: list[str] = []
    for heading, body in sections.items():
        phrases = _quoted_in_bullets(body)
        if heading.startswith("`error`"):
            continue  # the base class: nothing raises it
        assert phrases, f"section {heading!r} quotes no message"
        missing += [f"{heading}: {p!r}" for p in phrases if not any(p in s for s in strings)]
    assert not missing, "quoted on the page but printed nowhere:\n" + "\n".join(missing)


def test_the_checker_catches_a_phrase_the_code_does_not_print() -> None:
    strings = _source_strings()
    assert any("re-authorize and re-seed the connection's refresh_token" in s for s in strings)
    assert not any("re-authorize and re-seed the connection's access_token" in s for s in strings)
    assert _quoted_in_bullets('* "one" and "two"\n  "three"\n\nafter "four"') == ["one", "two", "three"]
