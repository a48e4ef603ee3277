"""Hostile identifiers shared by the escaping, CSV and partition-name tests, and a DOM check.

Every payload that would run script carries the marker ``xss`` (``data-xss`` on ``<body>`` when it
runs), so a page where one became live is found by :func:`live_injections`, whatever the
payload's element.
"""

from __future__ import annotations

from html.parser import HTMLParser

MARKER = "xss"

# Markup that runs script when a page writes it into the DOM as it is.
HTML_PAYLOADS: tuple[str, ...] = (
    "<img src=x onerror=document.body.setAttribute('data-xss','img')>",
    # Quoted attributes: also valid inline HTML for a Markdown renderer, which passes it through.
    "<img src=\"x\" onerror=\"document.body.setAttribute('data-xss','img2')\">",
    "<b onmouseover=\"document.body.setAttribute('data-xss','b')\">xss hover</b>",
    "<script>document.body.setAttribute('data-xss','script')</script>",
    "\"><svg onload=document.body.setAttribute('data-xss','svg')>",
    "<a href=\"javascript:document.body.setAttribute('data-xss','a')\">xss link</a>",
    "<iframe srcdoc='<b>xss</b>'></iframe>",
)
# Markdown that a renderer turns into a live link, an image, emphasis or a table cell.
MARKDOWN_PAYLOADS: tuple[str, ...] = (
    "[xss click](javascript:document.body.setAttribute('data-xss','md'))",
    "![xss](javascript:document.body.setAttribute('data-xss','md-img'))",
    "**xss bold** _xss em_ `xss code` ~~xss~~",
    "<http://xss.example>",
    "xss | cell | split",
    "xss\n# heading\n- item",
)
# TeX that matplotlib's mathtext (and the notebook renderer's math) would parse.
TEX_PAYLOADS: tuple[str, ...] = (
    "$\\foo$",
    "a$b$c",
    "$$",
    "\\$x$",
    "$\\frac{1}{0}$",
    "\\(xss\\)",
    "\\begin{equation}xss\\end{equation}",
)
# Cells a spreadsheet evaluates (OWASP: = + - @ tab CR), and ones that only look similar.
FORMULA_PAYLOADS: tuple[str, ...] = (
    '=HYPERLINK("http://xss.example","click")',
    "+1+2",
    "-3+4",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
    "''+twice",
)
HARMLESS_LOOKALIKES: tuple[str, ...] = ("a=b", "i-0abc-1", "x@y", "'plain", "", "O'Brien")

# Bidirectional controls that make a page show an id as another ("Trojan Source").
BIDI_PAYLOADS: tuple[str, ...] = (
    "vm-\u202etxt.exe",
    "\u2066xss\u2069-\u2067b\u2069",
    "a\u200fb\u200e\u061cc",
    "\u202a\u202b\u202c\u202d\u2068",
)

DISPLAY_PAYLOADS: tuple[str, ...] = HTML_PAYLOADS + MARKDOWN_PAYLOADS + TEX_PAYLOADS + BIDI_PAYLOADS

_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "srcdoc"}


class _Elements(HTMLParser):
    """Every element with its attributes, and the text of script elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def live_injections(html: str) -> list[str]:
    """What in ``html`` is live markup from a payload: event-handler attributes, script URLs,
    scripts or attributes carrying the marker (``<body data-xss>`` once a payload ran), frames.
    Escaped text that merely shows a payload is not live."""
    parser = _Elements()
    parser.feed(html)
    found = []
    for tag, attrs in parser.elements:
        if tag in {"iframe", "frame", "object", "embed"}:
            found.append(f"<{tag}>")
        for name, value in attrs:
            text = (value or "").strip().lower()
            if text.startswith("data:image/"):
                continue  # an embedded figure: base64 may spell the marker by chance
            script_url = name in _URL_ATTRIBUTES and text.startswith(("javascript:", "vbscript:"))
            if name.startswith("on") or script_url or MARKER in name.lower() or MARKER in text:
                found.append(f"<{tag} {name}={value}>")
    found += [f"<script>{s[:60]}" for s in parser.scripts if MARKER in s]
    return found


def shown_text(html: str) -> str:
    """The text a reader sees (script contents included, so nothing hides there), whitespace
    collapsed."""
    parser = _Text()
    parser.feed(html)
    return " ".join("".join(parser.parts).split())


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def as_shown(value: str) -> str:
    """How a page shows ``value``: control characters as spaces, whitespace collapsed."""
    cleaned = "".join(_shown_character(c) for c in value)
    return " ".join(cleaned.split())


def _shown_character(c: str) -> str:
    """Control characters show as spaces, bidirectional controls as a visible ``<U+202E>``."""
    if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0:
        return " "
    if c in BIDI_CONTROLS:
        return f"<U+{ord(c):04X}>"
    return c


BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None and self.tables:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_cells(html: str) -> list[list[list[str]]]:
    """Tables -> rows -> the shown text of each cell (header rows included)."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables
