"""mod_dirlisting: an HTML index of a directory that has no index file.

The page has lighttpd's structure (same table, classes and size format, so scripts
and stylesheets written for lighttpd's listing work), directories first, each group
sorted by name.  Every name is HTML-escaped in text and %-encoded in links: a file
called `<script>.txt` is shown, never run.

Listing a directory costs a scan, a stat per entry and a row of HTML per entry, many
times what serving a file does.  Two things keep that cost off repeated requests:
- a page, once rendered, is kept while the stat cache's second lasts (`PageCache`):
  the entries' stats it shows come from that second anyway, so a change to the
  directory shows from the next second on, as a changed file does.  With
  server.stat-cache-engine "disable", every listing is made afresh;
- a row is formatted once per (name, mtime, size) (`_row`): when the second turns, only
  the scan and the stats are done again for entries that did not change.
"""

from __future__ import annotations

import os
import re
import time
from stat import S_ISDIR
from typing import Any, Final
from urllib.parse import quote

from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.pcre import UnsupportedPattern, compile_pcre

from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..static import is_directory, mime_type, open_without_symlinks
from ..statcache import CACHE

INCLUDE_LIMIT: Final = 1 << 20      # header / readme files bigger than this are cut


def _file_option(default_name: str):
    """show-readme / show-header: "enable" means the default file name, "disable"
    none (those two words exactly, as lighttpd reads them), anything else is the
    file name itself."""
    def convert(value: str) -> str:
        if value == "enable":
            return default_name
        if value == "disable":
            return ""
        return value
    return convert


def _compile_excludes(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(compile_pcre(p) for p in patterns)
    except UnsupportedPattern as err:
        raise DirectiveValueError(f"dir-listing.exclude: {err}") from None
    except re.error as err:
        raise DirectiveValueError(f"dir-listing.exclude: bad regex: {err}") from None


def _check_cache(value):
    if value is not None and len(value) and not isinstance(value.get("path"), str):
        raise DirectiveValueError('dir-listing.cache must include "path"')
    return value


DIRECTIVES: Final = (
    Directive("dir-listing.activate", Type.BOOL, False),
    Directive("server.dir-listing", Type.BOOL, False, doc="old name of dir-listing.activate"),
    Directive("dir-listing.exclude", Type.ARRAY_VLIST, (), convert=_compile_excludes),
    Directive("dir-listing.hide-dotfiles", Type.BOOL, True),
    Directive("dir-listing.external-css", Type.STRING, ""),
    Directive("dir-listing.external-js", Type.STRING, ""),
    Directive("dir-listing.encoding", Type.STRING, ""),
    Directive("dir-listing.show-readme", Type.STRING, "", convert=_file_option("README.txt")),
    Directive("dir-listing.hide-readme-file", Type.BOOL, False),
    Directive("dir-listing.show-header", Type.STRING, "", convert=_file_option("HEADER.txt")),
    Directive("dir-listing.hide-header-file", Type.BOOL, False),
    Directive("dir-listing.set-footer", Type.STRING, ""),
    Directive("dir-listing.encode-readme", Type.BOOL, True),
    Directive("dir-listing.encode-header", Type.BOOL, True),
    Directive("dir-listing.auto-layout", Type.BOOL, True),
    Directive("dir-listing.cache", Type.ARRAY_KVANY, None, convert=_check_cache,
              doc="accepted; listings are kept in memory for the stat cache's second"),
)

# lighttpd's ENCODING_MINIMAL_XML: controls, DEL and the five markup characters, and `
_XML_ESCAPES: Final = {code: f"&#x{code:02X};" for code in (*range(0x20), 0x7F,
                                                             *b"<>&\"'`")}

STYLE: Final = """<style type="text/css">
a, a:active {text-decoration: none; color: blue;}
a:visited {color: #48468F;}
a:hover, a:focus {text-decoration: underline; color: red;}
body {background-color: #F5F5F5;}
h2 {margin-bottom: 12px;}
table {margin-left: 12px;}
th, td {font: 90% monospace; text-align: left;}
th {font-weight: bold; padding-right: 14px; padding-bottom: 3px;}
td {padding-right: 14px;}
td.s, th.s {text-align: right;}
div.list {background-color: white; border-top: 1px solid #646464;
 border-bottom: 1px solid #646464; padding-top: 10px; padding-bottom: 14px;}
div.foot {font: 90% monospace; color: #787878; padding-top: 4px;}
</style>
"""

# Click a column heading to sort by it; directories stay above files.
SORT_SCRIPT: Final = """<script type="text/javascript">
// <!--
(function () {
 var table = document.querySelector("div.list table");
 if (!table) return;
 var body = table.tBodies[0], order = {};
 function key(row, col) {
  var text = row.cells[col].textContent;
  if (col == 2) {
   var units = " KMGTPE", n = parseFloat(text);
   return isNaN(n) ? -1 : n * Math.pow(1024, units.indexOf(text.slice(-1)));
  }
  return text;
 }
 function sortBy(col) {
  var rows = Array.prototype.slice.call(body.rows);
  var parent = rows.length && rows[0].cells[0].textContent == "../" ? rows.shift() : null;
  var dir = order[col] = -(order[col] || -1);
  rows.sort(function (a, b) {
   var ad = a.className == "d", bd = b.className == "d";
   if (ad != bd) return ad ? -1 : 1;
   var x = key(a, col), y = key(b, col);
   return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
  if (parent) body.appendChild(parent);
  rows.forEach(function (row) { body.appendChild(row); });
 }
 Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
  th.style.cursor = "pointer";
  th.onclick = function () { sortBy(col); };
 });
})();
// -->
</script>
"""

TABLE_HEAD: Final = (
    '<div class="list">\n'
    '<table summary="Directory Listing" cellpadding="0" cellspacing="0">\n'
    '<thead><tr><th class="n">Name</th><th class="m">Last Modified</th>'
    '<th class="s">Size</th><th class="t">Type</th></tr></thead>\n'
    "<tbody>\n"
)
PARENT_ROW: Final = ('<tr class="d"><td class="n"><a href="../">..</a>/</td><td class="m">'
              '&nbsp;</td><td class="s">- &nbsp;</td><td class="t">Directory</td></tr>\n')


_NEEDS_ESCAPE: Final = re.compile(f"[{re.escape(''.join(map(chr, _XML_ESCAPES)))}]")
# lighttpd's ENCODING_REL_URI_PART leaves these as they are; all else is %-encoded
_HREF_SAFE: Final = "!()*-_.~"
_NEEDS_QUOTING: Final = re.compile(f"[^A-Za-z0-9{re.escape(_HREF_SAFE)}]")


def html_escape(text: str) -> str:
    return text.translate(_XML_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def href(name: str) -> str:
    if not _NEEDS_QUOTING.search(name):
        return name
    return quote(name.encode("utf-8", "surrogateescape"), safe=_HREF_SAFE)


def size_text(size: int) -> str:
    """lighttpd's compact size: one decimal and a unit letter ("0.1K", "12.3M")."""
    if size < 100:
        size += 99
    if size < 100:
        size = 0
    units = " KMGTPE"
    unit = 0
    while True:
        remain = size & 1023
        size >>= 10
        unit += 1
        if size & ~1023 == 0:
            break
    remain = min(remain // 100, 9)
    if size > 999:
        size, remain, unit = 0, 9, unit + 1
    return f"{size}.{remain}{units[unit]}"


_LIST_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


class Directory:
    """The directory to list, by path; or, with server.follow-symlink off, by an fd
    opened through no symlink (static.open_without_symlinks) that its entries, their
    stats and its header and readme are all read from, so a directory swapped for a
    symlink after the path was checked is never the one listed.  A context manager:
    the fd is closed on leaving."""

    def __init__(self, path: str, follow_symlinks: bool) -> None:
        self.path = path
        self.fd = -1 if follow_symlinks else open_without_symlinks(path, _LIST_FLAGS)

    def __enter__(self) -> "Directory":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)

    def entries(self) -> list[os.DirEntry]:
        """Its entries, read from the fd when there is one."""
        with os.scandir(self.path if self.fd < 0 else self.fd) as entries:
            return list(entries)

    def stat(self, entry: os.DirEntry) -> os.stat_result:
        """An entry's stat (for a symlink, its target's); raises OSError."""
        return CACHE.stat(entry.path) if self.fd < 0 else entry.stat()

    def read_limited(self, name: str) -> str | None:
        """The start of the file `name` in this directory, None if it cannot be read."""
        try:
            if self.fd < 0:
                fd = os.open(os.path.join(self.path, name), _READ_FLAGS)
            else:
                fd = open_without_symlinks(name, _READ_FLAGS, self.fd)
            with open(fd, "rb") as handle:
                data = handle.read(INCLUDE_LIMIT)
        except OSError:
            return None
        return data.decode("utf-8", "surrogateescape")


def _excluded(name: str, excludes: tuple[re.Pattern[str], ...]) -> bool:
    """Whether dir-listing.exclude hides `name`: one of its patterns matches, or the
    name is no UTF-8, which lighttpd's patterns (PCRE2 in UTF mode) cannot read and
    so hide (it fails closed)."""
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:        # undecodable octets, held as surrogates
            return True
    return any(pattern.search(name) for pattern in excludes)


class Listing:
    """One directory's entries, split and sorted as lighttpd shows them."""

    def __init__(self, directory: Directory, values: dict) -> None:
        self.directories: list[tuple[str, float]] = []
        self.files: list[tuple[str, float, int]] = []
        hide_dot = values["dir-listing.hide-dotfiles"]
        excludes = values["dir-listing.exclude"]
        hidden = set()
        if values["dir-listing.hide-readme-file"] and values["dir-listing.show-readme"]:
            hidden.add(values["dir-listing.show-readme"])
        if values["dir-listing.hide-header-file"] and values["dir-listing.show-header"]:
            hidden.add(values["dir-listing.show-header"])
        stat = directory.stat
        for entry in directory.entries():
            name = entry.name
            if (hide_dot and name.startswith(".")) or name in hidden or \
                    (excludes and _excluded(name, excludes)):
                continue
            try:
                st = stat(entry)
            except OSError:
                continue
            if S_ISDIR(st.st_mode):
                self.directories.append((name, st.st_mtime))
            else:
                self.files.append((name, st.st_mtime, st.st_size))
        self.directories.sort(key=_name_bytes)
        self.files.sort(key=_name_bytes)


def _name_bytes(entry: tuple) -> bytes:
    return entry[0].encode("utf-8", "surrogateescape")


def _modified(mtime: float) -> str:
    return time.strftime("%Y-%b-%d %H:%M:%S", time.localtime(mtime))


MAX_ROWS: Final = 4096        # formatted rows kept (~1 MB); more start the memo afresh
_row_memo: Final[dict[tuple[str, float, int, int], str]] = {}


def _row(name: str, mtime: float, size: int, assign: tuple) -> str:
    """The table row of an entry (size -1: a directory), formatted once for as long as
    its name, mtime and size stay the same.  `assign` is keyed by id: mime_type keeps
    every table it was asked about alive, so an id is never reused for another."""
    key = (name, mtime, size, id(assign))
    row = _row_memo.get(key)
    if row is None:
        if len(_row_memo) >= MAX_ROWS:
            _row_memo.clear()
        row = _row_memo[key] = _format_row(name, mtime, size, assign)
    return row


def _format_row(name: str, mtime: float, size: int, assign: tuple) -> str:
    if size < 0:
        return (f'<tr class="d"><td class="n"><a href="{href(name)}/">'
                f'{html_escape(name)}</a>/</td><td class="m">{_modified(mtime)}'
                '</td><td class="s">- &nbsp;</td><td class="t">Directory</td></tr>\n')
    return (f'<tr><td class="n"><a href="{href(name)}">{html_escape(name)}</a>'
            f'</td><td class="m">{_modified(mtime)}</td><td class="s">'
            f'{size_text(size)}</td><td class="t">'
            f'{html_escape(mime_type(assign, name))}</td></tr>\n')


class PageCache:
    """Rendered pages, kept while the stat cache's second lasts (see the module's
    docstring), by (directory path, URL path, settings).  The settings object is kept
    with its page and compared by identity, so a request whose settings differ in
    anything never gets another's page."""

    def __init__(self, max_pages: int = 64, max_bytes: int = 1 << 20) -> None:
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self.second = -1
        self.pages: dict[tuple[str, str, int], tuple[dict, bytes]] = {}
        self.size = 0

    def get(self, path: str, uri_path: str, values: dict) -> bytes | None:
        if CACHE.second != self.second:
            self.second = CACHE.second
            self.clear()
            return None
        kept = self.pages.get((path, uri_path, id(values)))
        return kept[1] if kept is not None and kept[0] is values else None

    def put(self, path: str, uri_path: str, values: dict, page: bytes) -> None:
        if not CACHE.enabled or CACHE.second != self.second:
            return
        if len(self.pages) >= self.max_pages or self.size + len(page) > self.max_bytes:
            self.clear()
        self.pages[(path, uri_path, id(values))] = (values, page)
        self.size += len(page)

    def clear(self) -> None:
        self.pages.clear()
        self.size = 0


class Module(BaseModule):
    name = "dirlisting"
    replay_safe = True
    directives = DIRECTIVES

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.pages = PageCache()

    def handle_trigger(self, now: float) -> None:
        """Once a second, with the stat cache's tick: the kept pages are over, and an
        idle worker holds none."""
        self.pages.clear()

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        if request.method not in ("GET", "HEAD") or not request.uri_path.endswith("/"):
            return None
        values = request.values
        if not (values["dir-listing.activate"] or values["server.dir-listing"]):
            return None
        path, uri_path = request.physical_path, request.uri_path
        try:
            if not is_directory(request.physical_stat()):
                return None
            page = self.pages.get(path, uri_path, values)
            if page is None:
                page = self._list(request, values)
                self.pages.put(path, uri_path, values, page)
        except OSError:
            return 403
        response = request.response
        encoding = values["dir-listing.encoding"]
        response.add_header("Content-Type", f"text/html;charset={encoding}"   # lighttpd's bytes
                            if encoding else "text/html")
        response.write(page)
        return 200

    def _list(self, request: Request, values: dict) -> bytes:
        """The page of the request's directory, made now; raises OSError."""
        with Directory(request.physical_path, values["server.follow-symlink"]) as directory:
            page = self.render(request, directory, Listing(directory, values), values)
        return page.encode("utf-8", "surrogateescape")

    def render(self, request: Request, directory: Directory, listing: Listing,
               values: dict) -> str:
        parts: list[str] = []
        auto = values["dir-listing.auto-layout"]
        title = html_escape(request.uri_path)
        if auto:
            parts.append("<!DOCTYPE html>\n<html>\n<head>\n")
            if values["dir-listing.encoding"]:
                parts.append(f'<meta charset="{html_escape(values["dir-listing.encoding"])}">\n')
            parts.append(f"<title>Index of {title}</title>\n")
            css = values["dir-listing.external-css"]
            if css:
                parts.append('<meta name="viewport" content="initial-scale=1">'
                             f'<link rel="stylesheet" type="text/css" href="{html_escape(css)}">\n')
            else:
                parts.append(STYLE)
            parts.append("</head>\n<body>\n")
        self._include(parts, directory, values["dir-listing.show-header"],
                      values["dir-listing.encode-header"], "header")
        parts.append(f"<h2>Index of {title}</h2>\n")
        parts.append(TABLE_HEAD)
        if request.uri_path != "/":
            parts.append(PARENT_ROW)
        self._rows(parts, listing, values["mimetype.assign"])
        parts.append("</tbody>\n</table>\n</div>\n")
        self._include(parts, directory, values["dir-listing.show-readme"],
                      values["dir-listing.encode-readme"], "readme")
        if auto:
            footer = values["dir-listing.set-footer"] or values["server.tag"]
            parts.append(f'<div class="foot">{footer}</div>\n')
            script = values["dir-listing.external-js"]
            if script:
                parts.append(f'<script type="text/javascript" src="{html_escape(script)}">'
                             "</script>\n")
            elif not values["dir-listing.external-css"]:
                parts.append(SORT_SCRIPT)
            parts.append("</body>\n</html>\n")
        return "".join(parts)

    @staticmethod
    def _rows(parts: list[str], listing: Listing, assign: tuple) -> None:
        parts += [_row(name, mtime, -1, assign) for name, mtime in listing.directories]
        parts += [_row(name, mtime, size, assign) for name, mtime, size in listing.files]

    @staticmethod
    def _include(parts: list[str], directory: Directory, name: str, encode: bool,
                 css_class: str) -> None:
        """HEADER.txt / README.txt of the listed directory, escaped unless told not to."""
        if not name:
            return
        text = directory.read_limited(name)
        if text is None:
            return
        if encode:
            parts.append(f'<pre class="{css_class}">{html_escape(text)}</pre>')
        else:
            parts.append(text)
