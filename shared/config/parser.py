"""Parse lighttpd's config language into a `ConfigTree`, evaluating as it goes.

As in lighttpd, evaluation happens during parsing: variables are resolved, `+` is
computed, `include` / `include_shell` are expanded in place, so `include_shell
"script " + server.port` sees the value of `server.port` at that line.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

from .errors import ConfigError, Position
from .lexer import ASSIGN, COMPARE, EOF, INTEGER, NAME, PUNCT, STRING, Token, tokenize
from .pattern_shape import anchored
from .pcre import UnsupportedPattern, compile_pcre
from .tree import HTTP_FIELDS, Block, Condition, ConfigTree, Entry
from .values import INT_MAX, INT_MIN, Array, Value, ValueError_, checked_int, plus

MAX_INCLUDE_DEPTH = 32
# Arrays and blocks inside each other, counted together: the parser recurses for
# each level, and a fuzzed "((((..." must be a ConfigError, not a RecursionError.
# lighttpd's own parser has a stack limit too; real configs nest a few levels.
MAX_NESTING = 100
INCLUDE_SHELL_TIMEOUT = 60
ELSE_IF_WORDS = frozenset({"elseif", "elsif", "elif"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_REGEX_META = frozenset("\\^$.*+?()[]{}|")


def variable_key(name: str) -> str:
    """Bare names are variables: `x` means `var.x`; dotted names are used as written."""
    return name if "." in name else f"var.{name}"


class _Tokens:
    """A token stream with one token of look-ahead."""

    def __init__(self, text: str, source: str) -> None:
        self._iter = tokenize(text, source)
        self.current: Token = next(self._iter)
        self._next: Token | None = None

    def advance(self) -> Token:
        token = self.current
        if token.kind != EOF:
            self.current, self._next = self._next or next(self._iter), None
        return token

    def peek(self) -> Token:
        """The token after the current one."""
        if self._next is None:
            self._next = self.current if self.current.kind == EOF else next(self._iter)
        return self._next

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.current.kind == kind and (text is None or self.current.text == text)

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        if not self.at(kind, text):
            wanted = what or (f"'{text}'" if text else kind)
            raise ConfigError(f"expected {wanted}, found {self.current.describe()}",
                              self.current.position)
        return self.advance()


class ConfigParser:
    """One parse of a main config file and everything it includes."""

    def __init__(self, basedir: str, environ: dict[str, str] | None = None) -> None:
        self.basedir = basedir
        self.environ = dict(os.environ if environ is None else environ)
        self.root = Block(index=0, condition=None, parent=None)
        self.blocks: list[Block] = [self.root]
        self.files: list[str] = []
        self.warnings: list[str] = []       # lighttpd's parse-time warnings
        self._depth = 0
        self._nesting = 0
        self._in_global = 0
        self._conditions: dict[tuple[int, str, str, str], Block] = {}
        here = Position("<builtin>", 0, 0)
        self.root.keys.insert("var.CWD", Entry(os.getcwd(), here))
        self.root.keys.insert("var.PID", Entry(os.getpid(), here))

    # ----------------------------------------------------------------- sources
    def parse_text(self, text: str, source: str, block: Block | None = None,
                   included_at: Position | None = None) -> None:
        """Parse one source (a file's text or a command's output) into `block`.

        An included source's statements belong to the block the include stands in.
        """
        self._depth += 1
        try:
            if self._depth > MAX_INCLUDE_DEPTH:
                raise ConfigError(f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels "
                                  f"(an include loop?) including {source}", included_at)
            tokens = _Tokens(text, source)
            self._statements(tokens, block or self.root, closing=None)
        finally:
            self._depth -= 1

    def parse_file(self, path: str, block: Block | None = None,
                   included_at: Position | None = None) -> None:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}",
                              included_at) from None
        self.files.append(path)
        self.parse_text(text, path, block, included_at)

    def tree(self) -> ConfigTree:
        return ConfigTree(root=self.root, blocks=self.blocks, files=self.files,
                          warnings=self.warnings)

    # -------------------------------------------------------------- statements
    def _statements(self, tokens: _Tokens, block: Block, closing: str | None,
                    opened_at: Position | None = None) -> None:
        """Parse statements into `block` until `closing` ('}') or the end of the source."""
        chain_tail: Block | None = None
        while True:
            token = tokens.current
            if token.kind == EOF:
                if closing:
                    raise ConfigError(f"the block opened at {opened_at} is not closed: "
                                      f"expected '{closing}', found end of input",
                                      token.position)
                return
            if closing and tokens.at(PUNCT, closing):
                tokens.advance()
                return
            chain_tail = self._statement(tokens, block, chain_tail)

    def _statement(self, tokens: _Tokens, block: Block, chain_tail: Block | None) -> Block | None:
        """Parse one statement; return the last block of a condition chain it ended with."""
        token = tokens.current
        if tokens.at(PUNCT, "$"):
            return self._condition_chain(tokens, block, previous=None)
        if token.kind != NAME:
            raise ConfigError(f"expected a statement, found {token.describe()}", token.position)
        word = token.text
        if word == "if":
            tokens.advance()
            return self._condition_chain(tokens, block, previous=None)
        if word == "else" or word in ELSE_IF_WORDS:
            if chain_tail is None:
                raise ConfigError(f"'{word}' without a condition block before it", token.position)
            tokens.advance()
            if word == "else" and tokens.at(NAME, "if"):
                tokens.advance()
            return self._condition_chain(tokens, block, previous=chain_tail,
                                         needs_condition=word != "else")
        if word in ("include", "include_shell"):
            tokens.advance()
            argument = self._expression(tokens, block)
            if not isinstance(argument, str):
                raise ConfigError(f"{word} needs a string", token.position)
            if word == "include":
                self._include(argument, block, token.position)
            else:
                self._include_shell(argument, block, token.position)
            return None
        if word == "global" or (word == "config" and block is self.root
                                and tokens.peek().text == "{"):
            # `config { ... }` is how -p prints the global block: reading it back works
            tokens.advance()
            brace = tokens.expect(PUNCT, "{")
            nested = word == "global"     # lighttpd forbids conditions in global { }
            self._in_global += nested
            try:
                with self._nested(brace.position):
                    self._statements(tokens, self.root, closing="}", opened_at=brace.position)
            finally:
                self._in_global -= nested
            return None
        self._assignment(tokens, block)
        return None

    def _assignment(self, tokens: _Tokens, block: Block) -> None:
        name_token = tokens.advance()
        key = variable_key(name_token.text)
        if key.startswith("env."):
            raise ConfigError(f"cannot assign to the environment variable {key}",
                              name_token.position)
        operator = tokens.expect(ASSIGN, what="'=', '+=' or ':='").text
        value = self._expression(tokens, block)
        entry = Entry(value, name_token.position)
        if operator == "=":
            existing = block.keys.get(key)
            if existing is not None:
                raise ConfigError(
                    f"duplicate config key {key} in block {block.index} "
                    f"({block.description()}); first set at {existing.position}. "
                    "Use := to replace or += to append", name_token.position)
            block.keys.insert(key, entry)
        elif operator == ":=":
            block.keys.replace(key, entry)
        else:
            self._append(block, key, entry)

    def _append(self, block: Block, key: str, entry: Entry) -> None:
        """`+=`: merge with the value in this block, or a copy of the enclosing one."""
        old: Value | None
        if key in block.keys:
            old = block.keys.extract(key).value
        else:
            old = self._lookup(block, key)
            old = old.copy() if isinstance(old, Array) else old
        if old is not None:
            repeated: list[str] = []
            try:
                entry = Entry(plus(old, entry.value, repeated), entry.position)
            except ValueError_ as err:
                raise ConfigError(f"{key} += : {err}", entry.position) from None
            self.warnings += [f"{entry.position}: Duplicate array-key '{name}'"
                              for name in repeated]
        block.keys.insert(key, entry)

    # -------------------------------------------------------------- conditions
    def _condition_chain(self, tokens: _Tokens, parent: Block, previous: Block | None,
                         needs_condition: bool = False) -> Block:
        """Parse `$X["y"] op "z" { ... }` or an else-branch; return the new block."""
        condition = None
        start = tokens.current.position
        if self._in_global:
            raise ConfigError("conditions cannot be used inside global { ... }", start)
        if tokens.at(PUNCT, "$"):
            condition = self._condition(tokens, parent)
        elif previous is None or needs_condition:
            raise ConfigError(f"expected a condition such as $HTTP[\"host\"] == \"...\", "
                              f"found {tokens.current.describe()}", tokens.current.position)
        brace = tokens.expect(PUNCT, "{", what="'{' after the condition")
        block = self._block_for(parent, condition, previous, start)
        with self._nested(brace.position):
            self._statements(tokens, block, closing="}", opened_at=brace.position)
        return block

    @contextlib.contextmanager
    def _nested(self, position: Position) -> Iterator[None]:
        """One more level of arrays and blocks, refused past MAX_NESTING."""
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                raise ConfigError(f"arrays and blocks nested deeper than {MAX_NESTING} "
                                  "levels", position)
            yield
        finally:
            self._nesting -= 1

    def _block_for(self, parent: Block, condition: Condition | None,
                   previous: Block | None, position: Position) -> Block:
        """A new block, or the existing one for an identical condition (lighttpd merges).

        A plain `else` after a two-branch chain's head stands for the negated head
        condition, so a later block with that condition merges into it, as in lighttpd.
        """
        identity = condition.identity() if condition is not None else \
            _negated_identity(previous)
        dedupe_key = (parent.index, *identity) if identity else None
        if dedupe_key in self._conditions:
            if condition is None:
                dedupe_key = None           # a plain else is never merged away
            elif previous is not None:
                raise ConfigError("unreachable else condition: the same condition is "
                                  "already tested earlier at this level", position)
            else:
                return self._conditions[dedupe_key]
        block = Block(index=len(self.blocks), condition=condition, parent=parent,
                      previous=previous)
        if previous is not None:
            previous.following = block
        self.blocks.append(block)
        parent.children.append(block)
        if dedupe_key is not None:
            self._conditions[dedupe_key] = block
        return block

    def _condition(self, tokens: _Tokens, block: Block) -> Condition:
        start = tokens.expect(PUNCT, "$")
        kind = tokens.expect(NAME, what="HTTP, REQUEST_HEADER or SERVER after '$'")
        tokens.expect(PUNCT, "[")
        name = tokens.expect(STRING, what='a quoted field name like ["host"]')
        tokens.expect(PUNCT, "]")
        field = _condition_field(kind.text, name.text, name.position)
        if not tokens.at(COMPARE):
            raise ConfigError("expected a comparison: only == != =~ !~ =^ =$ are allowed in "
                              f"a condition, found {tokens.current.describe()}",
                              tokens.current.position)
        op = tokens.advance().text
        pattern_at = tokens.current.position
        text = self._expression(tokens, block)
        if not isinstance(text, str):
            raise ConfigError("a condition compares with a string", pattern_at)
        if op == "=~":
            op, text = simplify_regex(text) or (op, text)
        condition = Condition(comp_key=f'{kind.text}["{name.text}"]', field=field, op=op,
                              pattern=text, position=start.position)
        _compile_condition(condition, pattern_at)
        return condition

    # ------------------------------------------------------------- expressions
    def _expression(self, tokens: _Tokens, block: Block) -> Value:
        value = self._operand(tokens, block)
        while tokens.at(PUNCT, "+"):
            plus_token = tokens.advance()
            right = self._operand(tokens, block)
            try:
                value = plus(value, right)
            except ValueError_ as err:
                raise ConfigError(str(err), plus_token.position) from None
        return value

    def _operand(self, tokens: _Tokens, block: Block) -> Value:
        token = tokens.current
        if token.kind == STRING:
            return tokens.advance().text
        if token.kind == INTEGER:
            tokens.advance()
            return _integer(token)
        if tokens.at(PUNCT, "("):
            return self._array(tokens, block)
        if token.kind == NAME:
            tokens.advance()
            return self._variable(token, block)
        raise ConfigError(f"expected a value (string, integer, array or variable), found "
                          f"{token.describe()}", token.position)

    def _array(self, tokens: _Tokens, block: Block) -> Array:
        with self._nested(tokens.expect(PUNCT, "(").position):
            return self._array_elements(tokens, block)

    def _array_elements(self, tokens: _Tokens, block: Block) -> Array:
        array = Array()
        while not tokens.at(PUNCT, ")"):
            element_start = tokens.current.position
            first = self._expression(tokens, block)
            key, value = None, first
            if tokens.at(PUNCT, "=>"):
                tokens.advance()
                if not isinstance(first, str):
                    raise ConfigError("an array key must be a string", element_start)
                key, value = first, self._expression(tokens, block)
            try:
                array.append(key, value)
            except ValueError_ as err:
                raise ConfigError(str(err), element_start) from None
            if not tokens.at(PUNCT, ")"):
                tokens.expect(PUNCT, ",", what="',' or ')' in the array")
        tokens.advance()
        return array

    def _variable(self, token: Token, block: Block) -> Value:
        if token.text.startswith("env."):
            name = token.text[4:]
            if name not in self.environ:
                raise ConfigError(f"environment variable {name} is not set", token.position)
            return self.environ[name]
        key = variable_key(token.text)
        value = self._lookup(block, key)
        if value is None:
            raise ConfigError(f"undefined config variable {key}", token.position)
        return value.copy() if isinstance(value, Array) else value

    @staticmethod
    def _lookup(block: Block | None, key: str) -> Value | None:
        """The value of `key` in `block` or the nearest enclosing block that sets it."""
        while block is not None:
            entry = block.keys.get(key)
            if entry is not None:
                return entry.value
            block = block.parent
        return None

    # ---------------------------------------------------------------- includes
    def _include(self, pattern: str, block: Block, position: Position) -> None:
        if "\0" in pattern:        # no file has that name; glob() would raise ValueError
            raise ConfigError(f"include file not found: {pattern!r} has a NUL byte",
                              position)
        path = pattern if os.path.isabs(pattern) else os.path.join(self.basedir, pattern)
        if _GLOB_CHARS.search(pattern):
            matches = sorted(glob.glob(path))
        elif os.path.exists(path):
            matches = [path]
        else:
            raise ConfigError(f"include file not found: {pattern}", position)
        for match in matches:
            if os.path.isdir(match):
                continue
            self.parse_file(match, block, position)

    def _include_shell(self, command: str, block: Block, position: Position) -> None:
        try:
            done = subprocess.run(["/bin/sh", "-c", command], cwd=self.basedir,
                                  capture_output=True, timeout=INCLUDE_SHELL_TIMEOUT,
                                  env=self.environ)
        except (OSError, ValueError, subprocess.TimeoutExpired) as err:   # ValueError: NUL
            raise ConfigError(f'include_shell "{command}" could not run: {err}',
                              position) from None
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()
            raise ConfigError(f'include_shell "{command}" exited with status '
                              f"{done.returncode}" + (f": {detail}" if detail else ""),
                              position)
        output = done.stdout.decode("utf-8", errors="surrogateescape")
        self.parse_text(output, f'include_shell "{command}"', block)


_NEGATION = {"==": "!=", "!=": "==", "=~": "!~", "!~": "=~"}


def _negated_identity(previous: Block | None) -> tuple[str, str, str] | None:
    """What a plain `else` after a chain head `previous` means, when it can be said."""
    if previous is None or previous.previous is not None or previous.condition is None:
        return None
    comp_key, op, pattern = previous.condition.identity()
    return (comp_key, _NEGATION[op], pattern) if op in _NEGATION else None


def simplify_regex(pattern: str) -> tuple[str, str] | None:
    """A regex that is only an anchored literal becomes a plain comparison, as lighttpd
    does: `^/cgi-bin/` is `=^ "/cgi-bin/"`, `\\.php$` is `=$ ".php"`, `^/x$` is `== "/x"`.
    Cheaper per request, and it keeps `-p` output identical to lighttpd's.
    """
    prefix = pattern.startswith("^")
    suffix = pattern.endswith("$") and not pattern.endswith("\\$")
    if not prefix and not suffix:
        return None
    body = pattern[1 if prefix else 0:len(pattern) - (1 if suffix else 0)]
    literal = body
    if suffix and not prefix and body.startswith("\\."):
        body, literal = body[2:], body[1:]
    if any(char in _REGEX_META for char in body):
        return None
    if prefix and suffix:
        return "==", literal
    return ("=^" if prefix else "=$"), literal


def _integer(token: Token) -> int:
    """An integer literal, in lighttpd's 32-bit range.  A literal with more digits than
    int() converts (4300) is out of range too, and said so without all its digits."""
    digits = token.text.lstrip("0")
    if len(digits) > len(str(INT_MAX)):
        raise ConfigError(f"integer {digits[:12]}... ({len(digits)} digits) is out of "
                          f"range ({INT_MIN}..{INT_MAX})", token.position)
    try:
        return checked_int(int(token.text))
    except ValueError_ as err:
        raise ConfigError(str(err), token.position) from None


def _condition_field(kind: str, name: str, position: Position) -> str:
    if kind == "HTTP":
        if name not in HTTP_FIELDS:
            raise ConfigError(f'unknown condition field $HTTP["{name}"]; known: '
                              + ", ".join(sorted(HTTP_FIELDS)), position)
        return HTTP_FIELDS[name]
    if kind == "REQUEST_HEADER":
        if not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ConfigError(f'invalid header name in $REQUEST_HEADER["{name}"]', position)
        return "header:" + name.lower()
    if kind == "SERVER":
        if name != "socket":
            raise ConfigError(f'unknown condition field $SERVER["{name}"]; only "socket"',
                              position)
        return "socket"
    raise ConfigError(f"unknown condition ${kind}[...]: expected $HTTP, $REQUEST_HEADER "
                      "or $SERVER", position)


def _host_port_ok(port: str) -> bool:
    """What may follow a host in a $HTTP["host"] pattern, as lighttpd checks it:
    nothing, ":", or ":" and a port number from 1 to 65535 (read as strtol reads it:
    leading blanks and a "+" allowed; no leading zero)."""
    if not port or port == ":":
        return True
    digits = port[1:].lstrip(" \t\n\v\f\r")
    digits = digits[1:] if digits.startswith("+") else digits
    return port[0] == ":" and digits.isdigit() and digits[0] != "0" and \
        int(digits) <= 65535


def _compile_condition(condition: Condition, position: Position) -> None:
    """Check the pattern now so that a bad one is a config error, not a request error."""
    if condition.op in ("=~", "!~"):
        try:
            condition.regex = compile_pcre(condition.pattern)
            condition.anchored = anchored(condition.regex)
        except UnsupportedPattern as err:
            raise ConfigError(str(err), position) from None
        except re.error as err:
            raise ConfigError(f'invalid regular expression "{condition.pattern}": {err}',
                              position) from None
    elif condition.field == "remoteip":
        try:
            network = ipaddress.ip_network(condition.pattern, strict=False)
        except ValueError:
            raise ConfigError(f'"{condition.pattern}" is not an IP address or CIDR '
                              "network", position) from None
        if condition.op in ("==", "!="):
            condition.network = network
        # =^ and =$ compare the address as text, as lighttpd does
    elif condition.field == "host" and condition.pattern.startswith("["):
        address, bracket, port = condition.pattern[1:].partition("]")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            bracket = ""
        if not bracket or not _host_port_ok(port):
            raise ConfigError(f'"{condition.pattern}" is not a valid [IPv6] host', position)
    elif condition.field == "host" and ":" in condition.pattern:
        name, _, port = condition.pattern.partition(":")
        if not name or not _host_port_ok(":" + port):
            raise ConfigError(f'"{condition.pattern}" is not a valid host[:port] (lighttpd: '
                              '"invalid IP addr")', position)
    elif condition.field == "socket" and condition.op not in ("==", "!="):
        raise ConfigError('$SERVER["socket"] supports only == and !=', position)
