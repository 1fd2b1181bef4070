"""Banned words and `/patterns/`: matched in linear time, on text folded so look-alikes can't slip by.

Patterns run on RE2 (`google-re2`), which guarantees time linear in the prompt's length and
refuses what can't be matched that way (back-references, look-arounds). Python's `re`
backtracks: `/(a+)+$/` on a 28-character prompt blocked the event loop for 14 s. Before
matching, text is normalised the way an evader would have to undo it: NFKC (fullwidth letters,
ligatures), invisible characters removed (zero-width spaces, soft hyphens, joiners), case
folded, and Cyrillic/Greek letters that look like Latin ones folded to those.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import re2

log = logging.getLogger(__name__)

MAX_PATTERN_MEMORY = 1 << 20  # bytes of RE2 program per pattern: refuses patterns that blow up when compiled
# Texts a banned pattern must not match: one that does would refuse (nearly) every prompt.
EVERYDAY_TEXTS = ("", " ", "a", "e", "1")

# Letters from other scripts that render like Latin ones (Unicode's confusables, the common part).
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l",
        "ԛ": "q", "ԝ": "w", "ү": "y", "ɡ": "g",
        # Greek
        "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
        "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    }
)  # fmt: skip
# Marks that are invisible yet not "format" characters (Cf is removed wholesale).
_INVISIBLE_MARKS = {"\u034f", *(chr(c) for c in range(0xFE00, 0xFE10))}


def normalise(text: str) -> str:
    """What matching sees: NFKC, no invisible characters, case folded, look-alike letters folded."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf" and c not in _INVISIBLE_MARKS)
    # Fold case before confusables, so upper-case Cyrillic/Greek look-alikes fold too.
    return text.casefold().translate(_CONFUSABLES)


class PatternRefused(ValueError):
    """A `/pattern/` the bot won't run; `str()` is the reason, for the admin who typed it."""


def is_pattern(rule: str) -> bool:
    return len(rule) >= 3 and rule.startswith("/") and rule.endswith("/")


def _options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    options.max_mem = MAX_PATTERN_MEMORY
    return options


def compile_rule(rule: str) -> re2._Regexp:
    """The RE2 program for a banned word or `/pattern/`; PatternRefused says why not."""
    if not is_pattern(rule):
        # A word matches as a whole word, with any whitespace between its parts.
        parts = r"\s+".join(re2.escape(part) for part in normalise(rule).split())
        return re2.compile(rf"(?:^|[^\pL\pN_])(?:{parts})(?:$|[^\pL\pN_])", _options())
    try:
        regex = re2.compile(normalise(rule[1:-1]), _options())
    except re2.error as exc:
        raise PatternRefused(_reason(exc)) from None
    for text in EVERYDAY_TEXTS:
        if regex.search(text):
            shown = f"`{text}`" if text.strip() else "a blank prompt"
            raise PatternRefused(f"it would refuse almost every prompt (it matches {shown})")
    return regex


def _reason(exc: re2.error) -> str:
    message = exc.args[0] if exc.args else "not a valid pattern"
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    if "invalid perl operator" in message or "invalid escape sequence" in message:
        return f"{message}; back-references and look-arounds can't be matched in linear time"
    if "pattern too large" in message:
        return "it is too large to match quickly; make it simpler"
    return message


@dataclass(frozen=True, slots=True)
class BannedRules:
    """One server's banned words and patterns, compiled once."""

    rules: tuple[tuple[str, re2._Regexp], ...]

    @classmethod
    def compile(cls, words: Iterable[str]) -> BannedRules:
        compiled = []
        for word in words:
            try:
                compiled.append((word, compile_rule(word)))
            except PatternRefused as exc:  # stored by an older version that ran Python's re
                log.warning("ignoring the banned pattern %r: %s", word, exc)
        return cls(tuple(compiled))

    def match(self, text: str) -> str | None:
        """The first rule `text` breaks, if any; linear in len(text) for each rule."""
        if not self.rules:
            return None
        folded = normalise(text)
        for word, regex in self.rules:
            if regex.search(folded):
                return word
        return None


def split_list(text: str) -> list[str]:
    """Comma-separated items; a `/pattern/` may contain commas."""
    items, i = [], 0
    while i < len(text):
        while i < len(text) and text[i] in ", \n\t":
            i += 1
        if i >= len(text):
            break
        if text[i] == "/":
            end = text.find("/", i + 1)
            while end != -1 and text[end + 1 : end + 2] not in ("", ",", " ", "\n"):
                end = text.find("/", end + 1)
            if end != -1:
                items.append(text[i : end + 1])
                i = end + 1
                continue
        end = text.find(",", i)
        end = len(text) if end == -1 else end
        items.append(text[i:end].strip())
        i = end
    return [item for item in items if item]
