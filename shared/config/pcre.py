"""Regular expressions of a config as lighttpd 1.4.69 compiles them (PCRE2, with
PCRE2_UTF and without PCRE2_UCP: data_config.c for conditions, keyvalue.c for rewrite,
redirect and directory-listing rules), spelt for Python's `re`: PCRE syntax `re` reads
otherwise (`\\Q...\\E`, `\\x{...}`, `(?<name>`, a flag group in mid-pattern, POSIX
classes, `\\z`) rewritten; `\\w`, `\\d`, `\\s` and `\\b` made to know ASCII alone, as
PCRE2's do without UCP (re's know Unicode: `^/\\w+$` took /café, which lighttpd does
not); what `re` cannot do (verbs, recursion, `\\K`, `\\p{...}`) refused by name.
"""

from __future__ import annotations

import re
from typing import Final


class UnsupportedPattern(ValueError):
    """A pattern with PCRE syntax that `re` cannot run (the message names it)."""


# PCRE syntax that Python's `re` reads otherwise or not at all
_PCRE_TOKEN: Final = re.compile(r"\\Q(?P<quoted>.*?)(?:\\E|$)|\\x\{(?P<code>[0-9A-Fa-f]{1,6})\}"
                         r"|\\(?P<escape>.)|(?P<class>\[)"
                         r"|\(\?<(?P<name>[A-Za-z_]\w*)>"
                         r"|(?P<flags>\(\?[a-zA-Z]*(?:-[a-zA-Z]*)?\))"
                         r"|(?P<verb>\(\*|\(\?R\)|\(\?\||\(\?[+-]?\d+\)|\(\?&|\(\?P>|\(\?C)"
                         r"|(?P<open>\()|(?P<close>\))", re.S)
_REFUSED_ESCAPES: Final = {"K": r"\K (reset the match start)", "G": r"\G", "R": r"\R",
                           "X": r"\X", "p": r"\p{...}", "P": r"\P{...}", "C": r"\C",
                           "g": r"\g references", "k": r"\k<name> references", "N": r"\N",
                           "V": r"\V", "H": r"\H"}
# PCRE2_UTF without PCRE2_UCP: \w, \d, \s and \b know ASCII alone (re's know Unicode)
_WORD, _DIGIT, _SPACE = "a-zA-Z0-9_", "0-9", r"\t\n\v\f\r "
_NOT_IN_CLASS: Final = {"w": r"\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\U0010ffff",
                        "d": r"\x00-\x2f\x3a-\U0010ffff",
                        "s": r"\x00-\x08\x0e-\x1f\x21-\U0010ffff"}
_IN_CLASS: Final = {"w": _WORD, "d": _DIGIT, "s": _SPACE, "W": _NOT_IN_CLASS["w"],
                    "D": _NOT_IN_CLASS["d"], "S": _NOT_IN_CLASS["s"]}
_TRANSLATED_ESCAPES: Final = {"z": r"\Z", "Z": r"(?=\n?\Z)", "h": r"[ \t]", "v": r"[\n\v\f\r]",
                              "e": r"\x1b", "b": r"(?a:\b)", "B": r"(?a:\B)",
                              **{letter: f"[{spelt}]" for letter, spelt in _IN_CLASS.items()}}
_CLASS_ESCAPE: Final = re.compile(r"\\(.)", re.S)
_CLASS_END: Final = re.compile(r"\[\^?\]?(?:\\.|\[:\^?\w+:\]|[^\]\\])*\]", re.S)
_POSIX_CLASS: Final = re.compile(r"\[:(\^?)(\w+):\]")
_POSIX_CLASSES: Final = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
                         "lower": "a-z", "xdigit": "0-9A-Fa-f", "space": _SPACE, "word": _WORD,
                         "blank": r" \t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
                         "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
                         "ascii": r"\x00-\x7f"}


def _posix_classes(pattern: str, bracket: str) -> str:
    """`[[:alpha:]]` and friends, spelt out (`re` reads them as plain characters)."""
    def spelt(match: re.Match[str]) -> str:
        name = match.group(2)
        if match.group(1) or name not in _POSIX_CLASSES:
            raise UnsupportedPattern(f'regex "{pattern}": [:{match.group(1)}{name}:] '
                                     "is not supported")
        return _POSIX_CLASSES[name]
    return _POSIX_CLASS.sub(spelt, bracket)


def _class_escapes(bracket: str) -> str:
    """A class's \\w, \\d, \\s (and their complements) as ASCII ranges."""
    return _CLASS_ESCAPE.sub(lambda match: _IN_CLASS.get(match.group(1), match.group()),
                             bracket)


class _Translation:
    """One PCRE2 pattern spelt for `re`, token by token (_PCRE_TOKEN)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.out: list[str] = []
        # per open group: the flag groups opened inside it, closed with it (PCRE's
        # "(?i)" holds to the end of its group; `re` takes it only at the start)
        self.scopes = [0]

    def refuse(self, what: str) -> UnsupportedPattern:
        return UnsupportedPattern(f'regex "{self.pattern}": {what} is not supported')

    def run(self) -> str:
        position = 0
        while (match := _PCRE_TOKEN.search(self.pattern, position)) is not None:
            self.out.append(self.pattern[position:match.start()])
            position = getattr(self, "_" + match.lastgroup)(match)  # type: ignore[operator]
        self.out.append(self.pattern[position:])
        self.out.extend(")" * count for count in reversed(self.scopes))
        return "".join(self.out)

    def _quoted(self, match: re.Match[str]) -> int:
        self.out.append(re.escape(match.group("quoted")))
        return match.end()

    def _code(self, match: re.Match[str]) -> int:
        self.out.append(re.escape(chr(min(int(match.group("code"), 16), 0x10FFFF))))
        return match.end()

    def _escape(self, match: re.Match[str]) -> int:
        letter = match.group("escape")
        if letter in _REFUSED_ESCAPES:
            raise self.refuse(_REFUSED_ESCAPES[letter])
        self.out.append(_TRANSLATED_ESCAPES.get(letter, match.group()))
        return match.end()

    def _class(self, match: re.Match[str]) -> int:
        whole = _CLASS_END.match(self.pattern, match.start())
        if whole is None:
            raise UnsupportedPattern(f'regex "{self.pattern}": missing ]')
        self.out.append(_class_escapes(_posix_classes(self.pattern, whole.group())))
        return whole.end()

    def _name(self, match: re.Match[str]) -> int:
        self.out.append(f"(?P<{match.group('name')}>")
        self.scopes.append(0)
        return match.end()

    def _flags(self, match: re.Match[str]) -> int:
        if match.start() == 0:
            self.out.append(match.group())
        else:
            self.out.append(match.group()[:-1] + ":")
            self.scopes[-1] += 1
        return match.end()

    def _verb(self, match: re.Match[str]) -> int:
        raise self.refuse(f'"{match.group("verb")}" (verbs, recursion, branch reset, '
                          "callouts)")

    def _open(self, match: re.Match[str]) -> int:
        self.out.append("(")
        self.scopes.append(0)
        return match.end()

    def _close(self, match: re.Match[str]) -> int:
        count = self.scopes.pop() if len(self.scopes) > 1 else 0
        self.out.append(")" * count + ")")
        return match.end()


def translate_pcre(pattern: str) -> str:
    """A PCRE2 pattern as Python's `re` reads it, or UnsupportedPattern naming what
    `re` cannot do."""
    return _Translation(pattern).run()


def compile_pcre(pattern: str) -> re.Pattern[str]:
    """`pattern` translated and compiled; re.error or UnsupportedPattern when it cannot be."""
    return re.compile(translate_pcre(pattern))
