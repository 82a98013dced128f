"""The expression language of SSI `<!--#if expr="..." -->`, evaluated as lighttpd
1.4.69's mod_ssi evaluates it, quirks included, so that a page takes the same branch
under both servers.

- Values: bare words (a run of printable characters up to a space, tab or one of
  `()'=!<>&|`), 'quoted strings' (no escapes) and `$NAME` / `${NAME}` (a variable: the
  CGI environment first, then `<!--#set` variables; unknown is empty).  Adjacent values
  join with one space, an empty one adding nothing: `a 'b'` is "a b".
- Comparisons `= != < <= > >=` compare two strings byte-wise (`10 < 9` is true); when
  either side is a truth value (a parenthesised or negated expression) they compare
  truth values.  A comparison may not follow another: `a = b = c` fails.
- `&&` and `||` have the same precedence and apply left to right, every operand
  evaluated; `!` applies to the value or group right after it; a group in parentheses
  becomes a truth value and may be followed only by `&&`, `||`, `)` or the end.
- A string is true when not empty.  Any error (an unpaired quote, brace or
  parenthesis, a single `&` or `|`) makes the whole expression false, as in lighttpd,
  and is reported through `log`.

Where lighttpd loops forever (a character that is neither printable nor a space or a
tab, such as a newline, inside an expression) this evaluator reports an error instead.
Groups and negations nest at most MAX_NESTING deep, as in lighttpd.

An expression is tokenized once and kept (COMPILED_KEPT per worker): its variables
are looked up when each evaluation reaches them.
"""

from __future__ import annotations

import re
from typing import Callable, Final

MAX_NESTING: Final = 16

# token kinds
END: Final = "end"
VALUE: Final = "value"
LPAREN: Final = "("
RPAREN: Final = ")"
NOT: Final = "!"
AND: Final = "&&"
OR: Final = "||"
EQ: Final = "="
NE: Final = "!="
LT: Final = "<"
LE: Final = "<="
GT: Final = ">"
GE: Final = ">="
COMPARISONS: Final = frozenset({EQ, NE, LT, LE, GT, GE})
ERROR: Final = "error"
_BLANKS: Final = re.compile(r"[ \t]*")
_NAME: Final = re.compile(r"(?:[A-Za-z_][A-Za-z_0-9]*)?")            # after a $
_WORD: Final = re.compile(r"(?:(?![()'=!<>&|])[\x21-\x7e])*")        # printable, no operator


class _Value:
    """A string, or a truth value once an operator made it one."""

    __slots__ = ("text", "truth")

    def __init__(self) -> None:
        self.text = ""
        self.truth: bool | None = None

    def reset(self) -> None:
        self.text = ""
        self.truth = None

    def true(self) -> bool:
        return self.truth if self.truth is not None else self.text != ""

    def set_truth(self, truth: bool) -> None:
        self.truth = truth

    def append(self, text: str) -> None:
        """Join a value on with one space (an empty one adds nothing)."""
        if not self.text:
            self.text = text
        elif text:
            self.text += " " + text


def _compare(left: _Value, right: _Value, op: str) -> bool:
    if left.truth is None and right.truth is None:
        a, b = left.text.encode("utf-8", "surrogateescape"), \
            right.text.encode("utf-8", "surrogateescape")
        cmp = (a > b) - (a < b)
    else:
        cmp = int(left.true()) - int(right.true())
    return {EQ: cmp == 0, NE: cmp != 0, LT: cmp < 0, LE: cmp <= 0,
            GT: cmp > 0, GE: cmp >= 0}[op]


class _Token:
    """One token of an expression as the tokenizer read it: its kind, what a value
    adds (`text`, or the variable `name` looked up when it is used), the position
    after it, and for an error the reason logged when the evaluator reaches it."""

    __slots__ = ("kind", "text", "name", "pos", "why")

    def __init__(self, kind: str, pos: int, text: str = "", name: str | None = None,
                 why: str = "") -> None:
        self.kind = kind
        self.pos = pos
        self.text = text
        self.name = name
        self.why = why


def _always(pattern: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    """The match at `pos` of a pattern that matches the empty string too."""
    found = pattern.match(text, pos)
    assert found is not None
    return found


def _tokens(text: str) -> list[_Token]:
    """The tokens of `text` up to its end or its first error, the last one of the
    list (the tokenizer depends on the text alone: read once per expression)."""
    found: list[_Token] = []
    pos, size = 0, len(text)
    while True:
        pos = _always(_BLANKS, text, pos).end()
        if pos >= size:
            found.append(_Token(END, pos))
            return found
        token = _next_token(text, pos)
        found.append(token)
        if token.kind == ERROR:
            return found
        pos = token.pos


def _next_token(text: str, pos: int) -> _Token:
    """The token at `pos` (not a blank, not the end)."""
    char = text[pos]
    two = text[pos:pos + 2]
    if char in "<>!" and two in (LE, GE, NE):
        return _Token(two, pos + 2)
    if char in "=<>!()":
        return _Token(char, pos + 1)
    if char in "&|":
        if two in (AND, OR):
            return _Token(two, pos + 2)
        return _Token(ERROR, pos, why=f"missing second {char}")
    if char == "'":
        end = text.find("'", pos + 1)
        if end < 0:
            return _Token(ERROR, pos, why="missing closing quote")
        return _Token(VALUE, end + 1, text=text[pos + 1:end])
    if char == "$":
        if text[pos + 1:pos + 2] == "{":
            end = text.find("}", pos + 2)
            if end < 0:
                return _Token(ERROR, pos, why="missing closing curly-brace")
            return _Token(VALUE, end + 1, name=text[pos + 2:end])
        name = _always(_NAME, text, pos + 1).group()
        return _Token(VALUE, pos + 1 + len(name), name=name)
    word = _always(_WORD, text, pos).group()
    if not word:                          # lighttpd would spin here for ever
        return _Token(ERROR, pos, why="unexpected character")
    return _Token(VALUE, pos + len(word), text=word)


COMPILED_KEPT: Final = 1024          # expressions kept tokenized per worker
_compiled: dict[str, list[_Token]] = {}


def _compiled_tokens(text: str) -> list[_Token]:
    found = _compiled.get(text)
    if found is None:
        if len(_compiled) >= COMPILED_KEPT:
            _compiled.clear()
        found = _compiled[text] = _tokens(text)
    return found


class _Evaluator:
    """One evaluation: where it is in the expression's tokens, the nesting, and the
    variables."""

    def __init__(self, expr: str, lookup: Callable[[str], str | None],
                 log: Callable[[str], None]) -> None:
        self.tokens = _compiled_tokens(expr.split("\0", 1)[0])  # a C string to lighttpd
        self.next = 0
        self.pos = 0
        self.braces = 0
        self.depth = 0
        self.lookup = lookup
        self.log = log

    # ---------------------------------------------------------------- tokens
    def _token(self, value: _Value) -> str:
        """The next token; a value's text is appended to `value`.  The last token
        (the end, or an error: logged each time it is reached) is given again."""
        token = self.tokens[self.next]
        if self.next + 1 < len(self.tokens):
            self.next += 1
        self.pos = token.pos
        kind = token.kind
        if kind == VALUE:
            if token.name is None:
                value.append(token.text)
            else:
                found = self.lookup(token.name)
                if found is not None:
                    value.append(found)
        elif kind == LPAREN:
            self.braces += 1
        elif kind == RPAREN:
            self.braces -= 1
        elif kind == ERROR:
            self.log(f"pos: {self.pos + 1} {token.why}")
        return kind

    # ---------------------------------------------------------------- grammar
    def step(self, value: _Value) -> str:
        """One operand (values, a group, a negation); returns the token after it."""
        value.reset()
        level = self.braces
        token = self._token(value)
        if token == VALUE:
            while token == VALUE:
                token = self._token(value)
            return token
        if token == LPAREN:
            return self._group(value, level)
        if token == RPAREN:
            return RPAREN if self.braces >= 0 else ERROR
        if token == NOT:
            return self._negation(value)
        return token

    def _group(self, value: _Value, level: int) -> str:
        if self.braces > MAX_NESTING:
            return ERROR
        token = self.loop(value)
        if token != RPAREN or level != self.braces:
            return ERROR
        result = value.true()
        token = self.step(value)
        value.set_truth(result)
        return token if token in (AND, OR, RPAREN, END) else ERROR

    def _negation(self, value: _Value) -> str:
        self.depth += 1
        if self.depth > MAX_NESTING:
            return ERROR
        token = self.step(value)
        self.depth -= 1
        if token == ERROR:
            return token
        value.set_truth(not value.true())
        return token

    def _comparison(self, left: _Value, op: str) -> str:
        right = _Value()
        token = self.step(right)
        if token != ERROR:
            left.set_truth(_compare(left, right, op))
        return token

    def loop(self, left: _Value) -> str:
        """Operands joined by comparisons, `&&` and `||`, up to `)` or the end."""
        token = self.step(left)
        if token in COMPARISONS:
            token = self._comparison(left, token)
            if token in (RPAREN, END):
                return token
            if token not in (AND, OR):
                if token != ERROR:
                    self.log(f"pos: {self.pos + 1} parser failed somehow near here")
                return ERROR
        elif token not in (AND, OR):
            return token
        right = _Value()
        while token in (AND, OR):
            op = token
            token = self.step(right)
            if token in COMPARISONS:
                token = self._comparison(right, token)
                if token == ERROR:
                    break
            elif token not in (AND, OR, END, RPAREN):
                break
            both = (left.true() and right.true()) if op == AND else \
                (left.true() or right.true())
            left.set_truth(both)
        return token


def evaluate(expr: str, lookup: Callable[[str], str | None],
             log: Callable[[str], None] = lambda _message: None) -> bool:
    """Whether `expr` is true; `lookup(name)` gives a variable's value or None."""
    evaluator = _Evaluator(expr, lookup, log)
    value = _Value()
    token = evaluator.loop(value)
    return token == END and evaluator.braces == 0 and evaluator.depth == 0 and value.true()
