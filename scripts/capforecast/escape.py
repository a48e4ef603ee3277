"""Data strings (resource ids, metric and file names) made safe for where people read them.

Every value that comes from the data is untrusted: an id such as ``<img src=x onerror=...>``
must show as those characters, never become an element, a link or a formula. Each output kind
has one function, used by every page, table, headline and figure that shows data:

* :func:`html_text` for HTML (report tables): ``& < > " '`` become entities.
* :func:`markdown_text` for Markdown that is rendered to HTML (report headlines, the decision
  backtest section): the HTML entities above, plus a backslash before every other ASCII
  punctuation character, which CommonMark and the notebook renderer (mistune, with its
  ``$...$``, ``\\(...\\)`` and ``\\begin{...}`` math) then show literally: no emphasis, link,
  image, table cell, autolink or math. Line breaks and other control characters become spaces,
  so a value can never start a block of its own (heading, list, code).
* :func:`plot_text` for matplotlib text (titles, tick labels, legends): every ``$`` escaped, so
  mathtext never parses an id (``$\\foo$`` would raise at draw time, ``a$b$c`` would be
  typeset).

All three show Unicode bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
U+061C) as visible ``<U+202E>`` marks: in a page they would reorder the characters around them,
so ``vm\u202etxt.exe`` would read as another id ("Trojan Source").

CSV cells that a spreadsheet would run as formulas are handled by :mod:`capforecast.spreadsheet`.
"""

from __future__ import annotations

import string
from typing import Any

_HTML_ENTITIES: dict[str, str] = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#x27;",
}
# C0 and C1 control characters (tab, line feed, carriage return included).
_CONTROL_CHARACTERS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]

# Bidirectional formatting characters: they reorder the text around them when displayed.
_BIDI_CONTROLS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_BIDI_SHOWN = {code: f"<U+{code:04X}>" for code in _BIDI_CONTROLS}

_HTML_TABLE = str.maketrans(
    {**_HTML_ENTITIES, **{code: f"&lt;U+{code:04X}&gt;" for code in _BIDI_CONTROLS}}
)
_MARKDOWN_TABLE = str.maketrans(
    {
        **{ord(c): " " for c in map(chr, _CONTROL_CHARACTERS)},
        **{c: "\\" + c for c in string.punctuation if c not in _HTML_ENTITIES},
        **_HTML_ENTITIES,
        **{code: f"&lt;U\\+{code:04X}&gt;" for code in _BIDI_CONTROLS},
    }
)
_PLOT_TABLE = str.maketrans({"$": r"\$", **_BIDI_SHOWN})


def html_text(value: Any) -> str:
    """``value`` as HTML text: shows its characters, never markup."""
    return str(value).translate(_HTML_TABLE)


def markdown_text(value: Any) -> str:
    """``value`` for a Markdown string rendered to HTML: shows its characters (control
    characters as spaces), never Markdown syntax, HTML or math."""
    text = str(value).translate(_MARKDOWN_TABLE)
    # Whitespace next to the template's own markup (``**{id}**``) would stop it from being
    # emphasis; as character references it still shows as the same spaces.
    core = text.strip()
    if core == text:
        return text
    start = len(text) - len(text.lstrip())
    end = start + len(core)
    return _references(text[:start]) + core + _references(text[end:])


def _references(whitespace: str) -> str:
    return "".join(f"&#{ord(c)};" for c in whitespace)


def plot_text(value: Any) -> str:
    """``value`` for a matplotlib text (title, label, tick label, legend entry): shown
    literally, never as mathtext. Escape once, where the text is handed to matplotlib."""
    return str(value).translate(_PLOT_TABLE)
