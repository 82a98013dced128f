"""mod_ssi: Server Side Includes in pages named by `ssi.extension`, as lighttpd 1.4.69
answers them.

A page is read in 8 KiB pieces, as lighttpd reads it (worker/ssi_parse.py; a small
page is kept parsed, and a small file included as it stands kept whole, until its file
changes: a stat() says when, so a kept page or include is not even opened), and
each `<!--#cmd attr="v" -->`
directive (at most two attributes; anything else is sent as it stands, a
`<!--#comment ...-->` dropped) is replaced by its output:

- `echo var=NAME`: DATE_LOCAL, DATE_GMT, LAST_MODIFIED (with `config timefmt`,
  strftime), DOCUMENT_NAME, DOCUMENT_URI, USER_NAME, SCRIPT_URI, SCRIPT_URL, else the
  CGI variable (worker/gateway.py, without HTTP_AUTHORIZATION) or the `set` one of that
  name, else "(none)".  lighttpd ignores `encoding`: so does this module.
- `include` / `fsize` / `flastmod` with `file` (decoded, simplified, below the page's
  own directory: `..` never climbs out of it) or `virtual` (a URL path, mapped to the
  file system as lighttpd maps it, without the request's handlers: a script is
  included as a file).  With `ssi.recursion-max` above 0 a virtual include is itself
  processed as a page, up to that depth (and never the including page itself).
- `config timefmt` / `sizefmt` (bytes or abbrev), `set var value`, `printenv`,
  `if` / `elif` / `else` / `endif` (worker/ssi_expr.py), `exec cmd` (through /bin/sh,
  unless `ssi.exec` is off).  Errors leave nothing in the page (lighttpd knows no
  `errmsg`) and are logged.

Unlike lighttpd, an `exec` never stops the worker: the command runs as a child with
its stdout in a non-blocking pipe, the request is held (WAIT) until the command has
exited, and the page goes on where it stopped.  A long page is processed in turns of
STEP_BYTES, other connections served between them; its output past SPOOL_AT is kept
in a temporary file, so memory stays bounded whatever the page, its includes or its
commands produce.  Includes nest at most MAX_DEPTH deep and a page makes at most
MAX_INCLUDES of them (lighttpd's recursion message then stands for the rest): a page
that includes itself through others cannot multiply without end.

The answer (Content-Type `ssi.content-type`, text/html by default) is never kept by
the answer cache: it varies with the clock and the commands.  With
`ssi.conditional-requests` it has an ETag and a Last-Modified from the page and its
newest included file, and a matching conditional request gets 304.
"""

from __future__ import annotations

import os
import pwd
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Final, Generator, Iterable, cast

from shared.config.directives import Directive, Type

from ..gateway import cgi_environment
from ..http import ascii_lower
from ..module import WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..urlnorm import decoded_utf8, simplify_path
from ..ssi_expr import evaluate
from ..ssi_parse import DIRECTIVE, RAW, Attributes, PageCache, Piece
from ..static import check_preconditions, etag_for, is_regular, last_modified

if TYPE_CHECKING:
    from ..services import Services

DIRECTIVES: Final = (
    Directive("ssi.extension", Type.ARRAY_VLIST, (), doc="file suffixes processed as SSI"),
    Directive("ssi.content-type", Type.STRING, "", doc='default "text/html"'),
    Directive("ssi.conditional-requests", Type.BOOL, False),
    Directive("ssi.exec", Type.BOOL, True),
    Directive("ssi.recursion-max", Type.SHORT, 0),
)

STEP_BYTES: Final = 512 * 1024       # page bytes read in one turn of the event loop
SPOOL_AT: Final = 1024 * 1024        # output kept in memory up to this, then in a file
COPY_SIZE: Final = 64 * 1024
CACHED_PAGE_MAX: Final = 64 * 1024   # pages up to this size are kept parsed ...
CACHE_BUDGET: Final = 8 * 1024 * 1024   # ... up to this much of them per worker
MAX_DEPTH: Final = 32                # nested includes processed as pages, whatever the config
MAX_INCLUDES: Final = 4096           # includes in one answer
KILL_GRACE: Final = 3.0
DEFAULT_TIMEFMT: Final = "%a, %d %b %Y %T %Z"
TOO_DEEP: Final = b"(error: include directives recurse deeper than pre-defined ssi.recursion-max)"
LOOP: Final = b"(error: include directives create an infinite loop)"
_STATE: Final = "mod_ssi"
_XML_ESCAPED: Final = frozenset(b"<>&'\"") | frozenset(range(0x20)) | {0x7F}
_ABBREVIATIONS: Final = (" B", " kB", " MB", " GB", " TB")
TIMES_KEPT: Final = 64               # formatted times kept per worker (the clock's, the files')
_PAUSE: Final = object()             # what the page yields to let the loop turn


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _strftime(fmt: str, when: int, local: bool) -> bytes:
    """The format's own bytes pass through strftime as Latin-1 characters."""
    try:
        text = time.strftime(_bytes(fmt).decode("latin-1"),
                             time.localtime(when) if local else time.gmtime(when))
    except ValueError:
        text = ""
    return text.encode("latin-1", "replace") if text else b"(none)"


def minimal_xml(text: str) -> bytes:
    """lighttpd's ENCODING_MINIMAL_XML: markup and control characters as &#xHH;."""
    return b"".join(b"&#x%02X;" % c if c in _XML_ESCAPED else bytes((c,))
                    for c in _bytes(text))


def _environment(request: Request) -> dict[str, str]:
    """The CGI variables without HTTP_AUTHORIZATION (as lighttpd leaves it out), the
    header values among them read as UTF-8, as the page's bytes are."""
    env = cgi_environment(request)
    env.pop("HTTP_AUTHORIZATION", None)
    return env


def _env_order(name: str) -> tuple[int, bytes]:
    """lighttpd's sorted arrays: by length, then by bytes."""
    key = _bytes(name)
    return len(key), key


def join_path(base: str, rest: str) -> str:
    """Two path pieces with exactly one slash between them."""
    if base.endswith("/") and rest.startswith("/"):
        return base + rest[1:]
    if not base.endswith("/") and not rest.startswith("/"):
        return base + "/" + rest
    return base + rest


def _clean(path: str) -> str | None:
    """%-decoded and simplified, or None when that is not valid UTF-8."""
    decoded = decoded_utf8(path)
    if decoded is None:
        return None
    return simplify_path(decoded if decoded.startswith("/") else "/" + decoded)


# ------------------------------------------------------------------ output
class _Output:
    """The answer being made: in memory up to SPOOL_AT, then in a temporary file."""

    def __init__(self, spool_dir: str | None) -> None:
        self.spool_dir = spool_dir
        self.parts: list[bytes] = []
        self.size = 0
        self.file: Any = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= SPOOL_AT:          # the usual case, and the first test
            self.parts.append(data)
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=self.spool_dir)
            self.file.write(b"".join(self.parts))
            self.parts = []
        self.file.write(data)

    def deliver(self, request: Request) -> None:
        response = request.response
        if self.file is None:
            response.write(b"".join(self.parts))
            return
        self.file.flush()
        response.send_file_range(os.dup(self.file.fileno()), 0, self.size)
        self.close()

    def close(self) -> None:
        self.parts = []
        if self.file is not None:
            self.file.close()
            self.file = None


@dataclass
class _Document:
    """The page being read: the top one or an included one."""

    path: str
    uri_path: str
    st: os.stat_result


class Module(BaseModule):
    name = "ssi"
    directives = DIRECTIVES
    active_when = {"handle_subrequest_start": "ssi.extension"}
    # A request it leaves alone is decided by its settings and its file name; one it
    # answers is never kept (its replay_key is dropped).
    replay_safe = True

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.services: "Services" = services
        self.user_names: dict[int, str] = {}
        self.pages = PageCache(CACHED_PAGE_MAX, CACHE_BUDGET)
        self.times: dict[tuple[str, int, bool], bytes] = {}

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        extensions = request.settings.values["ssi.extension"]
        path = request.physical_path
        if not any(ext and path.endswith(ext) for ext in extensions):
            return None
        request.replay_key = None          # varies with the clock and the commands
        page = _Page(self, request)
        request.plugin_ctx[_STATE] = page
        return page.run()

    def handle_subrequest(self, request: Request) -> HandlerResult:
        page = request.plugin_ctx.get(_STATE)
        return page.run() if page is not None else 500

    def handle_request_reset(self, request: Request) -> None:
        page = request.plugin_ctx.pop(_STATE, None)
        if page is not None:
            page.end()

    def user_name(self, uid: int) -> str:
        """The owner's name (USER_NAME), asked once per uid."""
        name = self.user_names.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self.user_names[uid] = name
        return name

    def formatted_time(self, fmt: str, when: int, local: bool) -> bytes:
        """`when` through strftime(`fmt`), kept: a page shows the same second, and the
        same files' times, again and again."""
        key = (fmt, when, local)
        text = self.times.get(key)
        if text is None:
            if len(self.times) >= TIMES_KEPT:
                self.times.clear()
            text = self.times[key] = _strftime(fmt, when, local)
        return text


class _Page:
    """One SSI answer: the page's state (variables, formats, the if/else levels as
    lighttpd counts them) and the generator that reads it, paused by `exec`."""

    def __init__(self, module: Module, request: Request) -> None:
        values = request.settings.values
        self.module = module
        self.services = module.services
        self.request = request
        self.exec_allowed = values["ssi.exec"]
        self.recursion_max = values["ssi.recursion-max"]
        self._env: dict[str, str] | None = None
        self.variables: dict[str, str] = {}
        self.timefmt = ""
        self.abbrev = False
        self.if_level = self.false_level = 0
        self.if_false = self.false_endif = False
        self.depth = 0
        self.includes = 0
        self.newest_include = 0
        dirs = module.services.upload_dirs
        self.out = _Output(dirs[0] if dirs else None)
        self.top: _Document | None = None
        self.steps: Generator[Any, None, None] = self._top_document()
        self.command: _Command | None = None
        self.since_pause = 0

    # ------------------------------------------------------------------ driving
    def run(self) -> HandlerResult:
        """Go on with the page until it is done (the answer) or waits (a command
        running, or a pause for the loop's other work)."""
        if self.command is not None:
            if not self.command.done:
                return WAIT
            self.command = None
        try:
            step = next(self.steps)
        except StopIteration:
            return self._answer()
        except OSError as err:         # the page cannot be read, or the spool written
            self.services.log_error("mod_ssi.c", f"{self.request.physical_path}: {err}")
            return 500
        if step is _PAUSE:
            self.services.call_later(0, self.request.wake)
        else:
            self.command = step
        return WAIT

    def end(self) -> None:
        if self.command is not None:
            self.command.end()
            self.command = None
        self.steps.close()
        self.out.close()

    def _answer(self) -> int:
        request, response = self.request, self.request.response
        values = request.settings.values
        response.set_header("Content-Type", values["ssi.content-type"] or "text/html")
        if values["ssi.conditional-requests"] and self.top is not None:
            status = self._validators(values)
            if status:
                self.out.close()
                return status
        self.out.deliver(request)
        return 200

    def _validators(self, values: dict) -> int:
        """ETag and Last-Modified of the page and its newest include; 304 (or 412)
        when the request's conditions say the client has it."""
        top = self.top
        assert top is not None
        st = top.st
        mtime = max(int(st.st_mtime), self.newest_include)
        etag = etag_for(st.st_ino, st.st_size,
                        mtime * 1_000_000_000 + st.st_mtime_ns % 1_000_000_000,
                        values["etag.use-inode"], values["etag.use-size"],
                        values["etag.use-mtime"])
        response = self.request.response
        if etag:
            response.set_header("ETag", etag)
        response.set_header("Last-Modified", last_modified(mtime))
        return check_preconditions(self.request, etag, mtime)

    # ------------------------------------------------------------------ reading
    def _top_document(self) -> Generator[Any, None, None]:
        request = self.request
        path = request.physical_path
        kept = self._kept(path, self.module.pages.pieces_kept)
        if kept is not None:
            self.top = _Document(path, request.uri_path, kept[0])
            yield from self._read(self.top, kept[1])
            return
        fd, st = self._open(path)
        self.top = _Document(path, request.uri_path, st)
        try:
            yield from self._read(self.top, self.module.pages.pieces_of(path, fd, st))
        finally:
            os.close(fd)

    def _kept(self, path: str, find: Callable[[str, os.stat_result], Any]
              ) -> tuple[os.stat_result, Any] | None:
        """(stat, what `find` keeps of the file) when a stat() now says the file is
        unchanged since it was kept (a new version is seen at once, as when it is read
        every time), else None: the file is to be opened (which also refuses a symlink
        where they are not followed, and says why it cannot be read)."""
        if not self.request.settings.values["server.follow-symlink"] and \
                self.services.stat_cache.contains_symlink(path):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        found = find(path, st)
        return (st, found) if found is not None else None

    def _open(self, path: str) -> tuple[int, os.stat_result]:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if not self.request.settings.values["server.follow-symlink"]:
            flags |= os.O_NOFOLLOW
        fd = os.open(path, flags)
        try:
            return fd, os.fstat(fd)
        except OSError:
            os.close(fd)
            raise

    def _read(self, doc: _Document, found: Iterable[Piece]) -> Generator[Any, None, None]:
        """The page's pieces (worker/ssi_parse.py): text goes out unless a condition
        hides it, directives are run; a turn of the loop after each STEP_BYTES."""
        for kind, data in found:
            if kind == DIRECTIVE:
                command, attrs = cast("tuple[str, Attributes]", data)
                handler = _SIMPLE.get(command)
                if handler is not None:          # most: no generator needed
                    handler(self, doc, command, attrs)
                else:
                    yield from self._directive(doc, command, attrs)
                continue
            text = cast(bytes, data)
            if kind == RAW or not self.if_false:
                self.out.write(text)
            if self._pause_due(len(text)):
                yield _PAUSE

    def _directive(self, doc: _Document, command: str,
                   attrs: Attributes) -> Generator[Any, None, None]:
        """The directives that may wait (include: a page read in turn; exec) and the
        unknown ones."""
        if command in ("include", "fsize", "flastmod"):
            yield from self._file_directive(doc, command, attrs)
        elif command == "exec":
            cmd = self._exec_command(attrs)
            if cmd is not None:
                yield _Command(self, cmd)
        else:
            self._log(f"unknown ssi-command: {command}")

    def _log(self, message: str) -> None:
        self.services.log_error("mod_ssi.c", f"ssi: {message}")

    def _attributes(self, command: str, attrs: Attributes,
                    known: tuple[str, ...]) -> dict[str, str]:
        """The attributes a directive knows (the last of a name wins); the others
        logged."""
        found: dict[str, str] = {}
        for name, value in attrs:
            if name in known:
                found[name] = value
            else:
                self._log(f"unknown attribute for {command} {name}")
        return found

    @property
    def env(self) -> dict[str, str]:
        """The CGI variables, made when a directive first asks for one."""
        if self._env is None:
            self._env = _environment(self.request)
        return self._env

    def lookup(self, name: str) -> str | None:
        """A variable: the CGI environment's first, then those `set` made."""
        value = self.env.get(name)
        return value if value is not None else self.variables.get(name)

    def _echo(self, doc: _Document, command: str, attrs: Attributes) -> None:
        name = self._attributes(command, attrs, ("var", "encoding")).get("var")
        if self.if_false:
            return
        if name is None:
            self._log(f"{command} var is missing")
            return
        self.out.write(self._echo_value(doc, name))

    def _echo_value(self, doc: _Document, name: str) -> bytes:
        if name in ("DATE_LOCAL", "DATE_GMT", "LAST_MODIFIED"):
            when = int(doc.st.st_mtime) if name == "LAST_MODIFIED" else int(time.time())
            return self._time(when, local=name != "DATE_GMT")
        request = self.request
        if name == "DOCUMENT_NAME":
            return _bytes(doc.path.rsplit("/", 1)[-1])
        if name == "DOCUMENT_URI":
            return _bytes(doc.uri_path)
        if name == "USER_NAME":
            return _bytes(self.module.user_name(doc.st.st_uid))
        if name in ("SCRIPT_URI", "SCRIPT_URL"):
            url = request.target + (f"?{request.uri_query}" if request.uri_query else "")
            if name == "SCRIPT_URL":
                return _bytes(url)
            if not request.scheme or not request.host:
                return b""
            return _bytes(f"{request.scheme}://{request.host}{url}")
        value = self.lookup(name)
        return _bytes(value) if value is not None else b"(none)"

    def _time(self, when: int, local: bool) -> bytes:
        return self.module.formatted_time(self.timefmt or DEFAULT_TIMEFMT, when, local)

    def _config(self, doc: _Document, command: str, attrs: Attributes) -> None:
        if self.if_false:
            return
        for name, value in attrs:
            if name == "timefmt":
                self.timefmt = value
            elif name == "sizefmt" and value in ("abbrev", "bytes"):
                self.abbrev = value == "abbrev"
            elif name == "sizefmt":
                self._log(f"unknown value for attribute '{name}' for {command} {value}")
            else:
                self._log(f"unknown attribute for {command} {name}")

    def _set(self, doc: _Document, command: str, attrs: Attributes) -> None:
        found = self._attributes(command, attrs, ("var", "value"))
        if self.if_false:
            return
        if "var" in found and "value" in found:
            self.variables[found["var"]] = found["value"]
        else:
            self._log("var and value have to be set in <!--#set var=... value=... -->")

    def _printenv(self, doc: _Document, command: str, attrs: Attributes) -> None:
        if self.if_false:
            return
        for table in (self.variables, self.env):
            for name in sorted(table, key=_env_order):
                self.out.write(_bytes(name) + b"=" + minimal_xml(table[name]) + b"\n")

    def _comment(self, doc: _Document, command: str, attrs: Attributes) -> None:
        """<!--#comment --> (with no text, which _is_comment does not see)."""

    # ------------------------------------------------------------------ conditions
    def _expression(self, command: str, attrs: Attributes) -> str | None:
        expr = self._attributes(command, attrs, ("expr",)).get("expr")
        if expr is None:
            self._log(f"{command} expr missing")
        return expr

    def _true(self, expr: str) -> bool:
        return evaluate(expr, self.lookup, lambda why: self.services.log_error(
            "mod_ssi.c", f"{why} ({expr})"))

    def _if(self, doc: _Document, command: str, attrs: Attributes) -> None:
        expr = self._expression(command, attrs)
        if expr is None:
            return
        if not self.if_false and (self.false_level == 0 or self.if_level < self.false_level):
            if self._true(expr):
                self.if_false = False
            else:
                self.if_false, self.false_level = True, self.if_level
        self.if_level += 1

    def _elif(self, doc: _Document, command: str, attrs: Attributes) -> None:
        expr = self._expression(command, attrs)
        if expr is None:
            return
        self.if_level -= 1
        if self.if_level == self.false_level:
            if self.if_false and not self.false_endif:
                if self._true(expr):
                    self.if_false = False
                else:
                    self.if_false, self.false_level = True, self.if_level
            else:
                self.if_false, self.false_level, self.false_endif = True, self.if_level, True
        self.if_level += 1

    def _else(self, doc: _Document, command: str, attrs: Attributes) -> None:
        self.if_level -= 1
        if self.if_false:
            if self.if_level == self.false_level and not self.false_endif:
                self.if_false = False
        else:
            self.if_false, self.false_level = True, self.if_level
        self.if_level += 1

    def _endif(self, doc: _Document, command: str, attrs: Attributes) -> None:
        self.if_level -= 1
        if self.if_level == self.false_level:
            self.if_false = self.false_endif = False

    # ------------------------------------------------------------------ files
    def _file_directive(self, doc: _Document, command: str,
                        attrs: Attributes) -> Generator[Any, None, None]:
        found = self._attributes(command, attrs, ("file", "virtual"))
        if not found:
            self._log(f"{command} file or virtual is missing")
            return
        if len(found) == 2:
            self._log(f"{command} only one of file and virtual is allowed here")
            return
        if self.if_false:
            return
        virtual = found.get("virtual")
        target = self._virtual_path(doc, virtual) if virtual is not None \
            else self._file_path(doc, found["file"])
        if target is None:
            return
        path, uri_path = target
        values = self.request.settings.values
        if not values["server.follow-symlink"] and \
                self.services.stat_cache.contains_symlink(path):
            return
        if command == "include":
            kept = self._kept(path, self.module.pages.pieces_kept
                              if virtual is not None and self.recursion_max
                              else self.module.pages.content_kept)
            if kept is not None and is_regular(kept[0]):
                yield from self._include(doc, path, uri_path, -1, kept[0],
                                         processed=virtual is not None, kept=kept[1])
                return
        try:
            fd, st = self._open(path)
        except OSError as err:
            self._log(f"stating {path} failed: {err.strerror}")
            return
        try:
            if command == "fsize":
                self.out.write(self._size(st.st_size))
            elif command == "flastmod":
                self.out.write(self._time(int(st.st_mtime), local=True))
            elif not is_regular(st):       # lighttpd breaks its answer on a directory
                self._log(f"include of {path}: not a regular file")
            else:
                fd = yield from self._include(doc, path, uri_path, fd, st,
                                              processed=virtual is not None)
        finally:
            if fd >= 0:
                os.close(fd)

    def _file_path(self, doc: _Document, name: str) -> tuple[str, str] | None:
        """`file`: below the directory of the page being read."""
        clean = _clean(name)
        if clean is None:
            self._log(f"SSI invalid UTF-8 after url-decode: {name}")
            return None
        directory = doc.path[:doc.path.rfind("/") + 1]
        return join_path(directory, clean), clean

    def _virtual_path(self, doc: _Document, virtual: str) -> tuple[str, str] | None:
        """`virtual`: a URL path (relative to the page's), mapped to a file as lighttpd
        maps it: beside the page's own file when the two URLs share a directory,
        else below the document root."""
        uri_path = doc.uri_path
        base = "" if virtual.startswith("/") else uri_path[:uri_path.rfind("/") + 1]
        clean = _clean(base + virtual)
        if clean is None:
            self._log(f"SSI invalid UTF-8 after url-decode: {virtual}")
            return None
        request = self.request
        shared = 0
        while shared < min(len(uri_path), len(clean)) and uri_path[shared] == clean[shared]:
            shared += 1
        while shared > 0:
            shared -= 1
            if uri_path[shared] == "/":
                break
        lower = request.settings.values["server.force-lowercase-filenames"]
        mapped = ascii_lower(clean) if lower else clean
        own_rest = ascii_lower(uri_path[shared:]) if lower else uri_path[shared:]
        physical = doc.path
        if physical.endswith(own_rest) or (lower and ascii_lower(physical).endswith(own_rest)):
            path = join_path(physical[:len(physical) - len(own_rest)], mapped[shared:])
        else:
            path = join_path(request.docroot or request.physical_basedir, mapped)
        return path, mapped

    def _size(self, size: int) -> bytes:
        if not self.abbrev:
            return b"%d" % size
        unit = 0
        while size > 1024 and unit + 1 < len(_ABBREVIATIONS):
            size //= 1024
            unit += 1
        return b"%d%s" % (size, _ABBREVIATIONS[unit].encode())

    def _include(self, doc: _Document, path: str, uri_path: str, fd: int,
                 st: os.stat_result, processed: bool, kept: Any = None
                 ) -> Generator[Any, None, int]:
        """The file as it is, or (virtual, with ssi.recursion-max) read as a page in
        turn: from the open `fd`, or what the page cache keeps of it (`kept`, its
        content or its pieces).  Returns the fd if it is still to be closed, else -1."""
        self.newest_include = max(self.newest_include, int(st.st_mtime))
        self.includes += 1
        if not processed or self.recursion_max == 0:
            if self.includes > MAX_INCLUDES:
                self.out.write(TOO_DEEP)
            elif kept is not None:
                self.out.write(kept)
                if self._pause_due(len(kept)):
                    yield _PAUSE
            else:
                yield from self._copy(path, fd, st)
            return fd
        if self.depth >= min(self.recursion_max, MAX_DEPTH) or self.includes > MAX_INCLUDES:
            self.out.write(TOO_DEEP)
            return fd
        if path == doc.path:
            self.out.write(LOOP)
            return fd
        self.depth += 1
        try:
            yield from self._read(_Document(path, uri_path, st), kept if kept is not None
                                  else self.module.pages.pieces_of(path, fd, st))
        finally:
            self.depth -= 1
        return fd

    def _copy(self, path: str, fd: int, st: os.stat_result) -> Generator[Any, None, None]:
        """A file's bytes (an include), read in bounded pieces, the loop turning
        after each STEP_BYTES; a small file's kept for the next page."""
        size = st.st_size
        if size <= CACHED_PAGE_MAX:
            data = os.read(fd, size)
            self.module.pages.keep_content(path, st, data)
            self.out.write(data)
            size -= len(data)
            if self._pause_due(len(data)):
                yield _PAUSE
        while size > 0:
            data = os.read(fd, min(COPY_SIZE, size))
            if not data:
                break
            self.out.write(data)
            size -= len(data)
            if self._pause_due(len(data)):
                yield _PAUSE

    def _pause_due(self, size: int) -> bool:
        """`size` bytes done: whether a pause for the loop's other work is due (after
        each STEP_BYTES)."""
        self.since_pause += size
        if self.since_pause >= STEP_BYTES:
            self.since_pause = 0
            return True
        return False

    # ------------------------------------------------------------------ exec
    def _exec_command(self, attrs: Attributes) -> str | None:
        if not self.exec_allowed:
            return None
        cmd = self._attributes("exec", attrs, ("cmd",)).get("cmd")
        return None if self.if_false else cmd


_SIMPLE: Final = {
    "echo": _Page._echo, "config": _Page._config, "set": _Page._set,
    "printenv": _Page._printenv, "comment": _Page._comment, "if": _Page._if,
    "elif": _Page._elif, "else": _Page._else, "endif": _Page._endif,
}


class _Command:
    """`<!--#exec cmd -->`: /bin/sh -c cmd, its stdout read into the page through a
    non-blocking pipe in the loop; done once the shell has exited (and what it wrote
    has been read), as lighttpd waits for it.  Its stdin is /dev/null, its stderr the
    request's server.breakagelog or else the worker's, its environment the worker's,
    as lighttpd gives them."""

    def __init__(self, page: _Page, cmd: str) -> None:
        self.page = page
        self.services = page.services
        self.cmd = cmd
        self.done = False
        self.exited = False
        self.pid = 0
        self.fd = -1
        self.kill_timer: Any = None
        try:
            self._start()
        except (OSError, subprocess.SubprocessError) as err:
            page.services.log_error("mod_ssi.c", f"spawning exec failed: {err} {cmd}")
            self._close()
            self.done = True
            self.services.call_later(0, page.request.wake)

    def _start(self) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.fd = read_end
        stderr = self.services.breakage_log(self.page.request, "mod_ssi.c")   # None: ours
        try:
            process = subprocess.Popen(["/bin/sh", "-c", self.cmd], stdin=subprocess.DEVNULL,
                                       stdout=write_end, stderr=stderr,
                                       close_fds=True, start_new_session=True)
        finally:
            os.close(write_end)
        self.pid = process.pid
        process.returncode = 0           # reaped through its pidfd, never by Popen
        self.services.loop.register(read_end, select.EPOLLIN, self)
        self.services.watch_child(self.pid, self._on_exit)

    def on_event(self, _mask: int) -> None:
        self._drain(4)

    def _drain(self, reads: int) -> None:
        """Read what the pipe holds (at most `reads` pieces); close it at its end."""
        for _ in range(reads):
            try:
                data = os.read(self.fd, COPY_SIZE)
            except BlockingIOError:
                return
            except OSError as err:
                self.services.log_error("mod_ssi.c", f"read from exec {self.cmd}: "
                                                     f"{err.strerror}")
                data = b""
            if not data:
                self._close()
                return
            self.page.out.write(data)

    def _on_exit(self, code: int) -> None:
        self.exited = True
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        if code < 0:
            self.services.log_error("mod_ssi.c", f"process exited abnormally: {self.cmd}")
        if self.fd >= 0:
            self._drain(16)        # what it wrote is in the pipe already
        self._close()
        if not self.done:
            self.done = True
            self.page.request.wake()

    def _close(self) -> None:
        if self.fd >= 0:
            self.services.loop.unregister(self.fd)
            os.close(self.fd)
            self.fd = -1

    def end(self) -> None:
        """The request is over before the command: stop it (its whole session)."""
        self.done = True
        self._close()
        if self.pid and not self.exited and self.kill_timer is None:
            self._signal(signal.SIGTERM)
            self.kill_timer = self.services.call_later(KILL_GRACE, self._kill)

    def _kill(self) -> None:
        if not self.exited:
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
