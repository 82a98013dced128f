"""mod_deflate: answers compressed with the coding the client accepts (lighttpd 1.4.69).

An answer is compressed when its Content-Type starts with one of `deflate.mimetypes`
(a trailing `*` is dropped; `""` matches every type, and an answer without a type
only then), its status has a body, it carries no Content-Encoding yet, its body is
larger than `deflate.min-compress-size` bytes and at most `deflate.max-compress-size`
KiB (0: no limit), the client accepts one of `deflate.allowed-encodings`, and the
load average is at most `deflate.max-loadavg` (0: no limit).  The coding is the one
the client gives the highest q-value, lighttpd's order breaking ties (the order of
`deflate.allowed-encodings`; by default zstd, br, then gzip, x-gzip, deflate).

What goes out, as lighttpd sends it:
- `Content-Encoding`, the ETag with the coding appended inside its quotes
  (`"123-gzip"`), no Accept-Ranges: a Range request on a compressed answer gets the
  whole compressed body (200), as lighttpd applies ranges to the identity body only;
- an If-None-Match naming the compressed ETag is answered 304 (with that ETag);
- `Vary: Accept-Encoding` (appended to a Vary there is).  Unlike lighttpd, Vary is
  sent on every answer the coding could have applied to (the identity one, a HEAD, a
  304, a 206), so a shared cache never serves one client's variant to another;
- HEAD is never compressed, nor an answer with `Cache-Control: no-transform`
  (RFC 9110 7.7; lighttpd ignores it), and `q=0` refuses a coding (lighttpd reads
  any coding named as accepted).

lighttpd 1.4.69 compresses nothing unless `deflate.allowed-encodings` is set (its
default list is lost); pylighttpd uses the default that list is documented to have.

Static files with `deflate.cache-dir`: the compressed file is kept at
`<cache-dir><physical path>-<etag>-<coding>` (lighttpd's name), written to a temp file
beside it and renamed, so a reader never sees half a file; a changed file has another
ETag, hence another name, and is compressed again.  It is then sent with sendfile, or
from memory up to static.SMALL_FILE (as a small static file is): kept for the second
(below), either form may be replayed by the answer cache, the file's by sendfile.  A
cache dir that refuses files is logged once per worker and the answers are compressed
in memory.  A static file's compressed answer held in memory is a snapshot like a
small file's own bytes: the answer cache may replay it for the rest of the second
(Accept-Encoding is part of its key).  Each worker also keeps every compressed variant
of a static file for the rest of the second (KeptVariants: the bytes, or the open
cache file or spool), for the requests the answer cache does not replay (another
query string, other headers, a large variant), with or without a cache dir: a
static file is compressed, or found in the cache dir, once per second at most, and a
change to it is seen within the second, as the stat cache sees it.  A file changed in
the last worker/settled.py SETTLED seconds is not kept: a second change within one
tick of the kernel's clock would leave the same ETag.

A body is compressed in `deflate.work-block-size` KiB steps, never read whole: the
output stays in memory up to SPILL_AT, then goes to an unlinked file in
server.upload-dirs.  The work is done in the event loop, as lighttpd does it in its
own: `deflate.max-compress-size` bounds it, and with a cache dir each version of a
file is compressed once.  A streamed answer (`server.stream-response-body` 1 or 2:
CGI, proxy, FastCGI) is compressed as it streams, chunked, through Response.encoder,
each part flushed as it is written so a slow backend's bytes are not held back (a
length its producer announces is checked against the limits).
`deflate.output-buffer-size` is accepted as lighttpd's but has nothing to size here.

Precompressed siblings (`deflate.precompressed = "enable"`, a pylighttpd key; off by
default, as nginx's gzip_static): a static file's `file.br`, `file.zst` or `file.gz`
answers in its place when the client accepts that coding (its q-values, then the
order of `deflate.allowed-encodings`, choose among the siblings there are) and the
sibling is a regular file not older than the file (an older one is ignored: it may
predate an edit).  The sibling goes out as it is, whatever `deflate.mimetypes` and the
size limits say (no CPU is spent), with Content-Encoding, its own ETag with the coding
appended (its bytes are not what on-the-fly compression would make), its length,
Vary, and no Accept-Ranges: a Range gets the whole sibling (200), as for any
compressed variant; If-None-Match naming its ETag is a 304.  A coding the client
prefers that has no sibling is compressed on the fly as usual.  The identity answer
of a file with siblings says Vary as well; HEAD is answered as the identity, as for
compressed variants.
"""

from __future__ import annotations

import errno
import os
import tempfile
from typing import Any, Final, Iterable, Iterator

from mypy_extensions import mypyc_attr

from shared.config.directives import Directive, DirectiveValueError, Type

from .. import static
from ..chunkqueue import SharedFd
from ..compress import ENCODERS, Params, make_encoder, parse_params
from ..http import lower_name
from ..module import Module as BaseModule
from ..request import Encoder, Request, Response
from ..settled import settled
from ..spool import SPILL_AT, Spool

# lighttpd's labels in its order of preference within a group it allows
_GROUPS: Final = (("gzip", ("gzip", "x-gzip")), ("deflate", ("deflate",)),
                  ("bzip2", ("bzip2", "x-bzip2")), ("br", ("br",)), ("zstd", ("zstd",)))
_DEFAULT_GROUPS: Final = (("zstd",), ("br",), ("gzip", "x-gzip", "deflate"))
_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
# the file names nginx's gzip_static and brotli_static look for, by coding
SIBLING_SUFFIXES: Final = {"br": ".br", "zstd": ".zst", "gzip": ".gz", "x-gzip": ".gz"}
# what a compressed answer drops of the identity's headers (the ETag unless it is odd)
_CODED_REPLACES: Final = frozenset({"etag", "content-encoding", "accept-ranges"})
_CODED_REPLACES_BUT_ETAG: Final = frozenset({"content-encoding", "accept-ranges"})
# A header field as a response holds it, typed so that compiled code keeps the tuple
# itself (a tuple[str, str] would be unpacked and made anew at each use)
Field = tuple[str, ...]
# Content-Encoding of each coding, one field each: an answer's fields are then the same
# objects each time, which the rendered-head table (worker/http.py) compares at once
_ENCODING_FIELDS: Final[dict[str, Field]] = {
    label: ("Content-Encoding", label) for _, labels in _GROUPS for label in labels}
_VARY_FIELD: Final[Field] = ("Vary", "Accept-Encoding")
MAX_CODINGS: Final = 256         # distinct Accept-Encoding values whose coding is remembered


def _available(groups: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    kept = (tuple(label for label in group if label in ENCODERS) for group in groups)
    return tuple(group for group in kept if group)


def parse_allowed(entries: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """deflate.allowed-encodings as lighttpd reads it: each entry names the codings
    whose name it contains ("x-gzip" allows gzip too, "brotli" allows br), in the
    order given; an empty list is the default.  Codings without a library are left
    out."""
    if not entries:
        return _available(_DEFAULT_GROUPS)
    groups = [labels for entry in entries for word, labels in _GROUPS if word in entry]
    return _available(tuple(groups))


def parse_mimetypes(entries: tuple[str, ...]) -> tuple[str, ...]:
    """Content-Type prefixes; a trailing `*` is dropped (`text/*` is `text/`), and
    `application/javascript` is `text/javascript`, as lighttpd reads them (its
    mimetype.assign gives .js the latter)."""
    prefixes = (e[:-1] if len(e) > 2 and e.endswith("*") else e for e in entries)
    return tuple("text/javascript" if prefix == "application/javascript" else prefix
                 for prefix in prefixes)


def parse_level(value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or \
            (value != -1 and not 1 <= value <= 9):
        raise DirectiveValueError(f"compression-level must be between 1 and 9: {value}")
    return value


def parse_loadavg(value: str) -> float:
    """strtod's reading: the leading number, 0 when there is none."""
    text = value.strip()
    for end in range(len(text), 0, -1):
        try:
            return float(text[:end])
        except ValueError:
            continue
    return 0.0


DIRECTIVES: Final = (
    Directive("deflate.mimetypes", Type.ARRAY_VLIST, (), convert=parse_mimetypes,
              doc="Content-Type prefixes to compress; empty: none"),
    Directive("deflate.allowed-encodings", Type.ARRAY_VLIST, parse_allowed(()),
              convert=parse_allowed,
              doc="codings offered, in order of preference (br, zstd, gzip, x-gzip, "
                  "deflate, bzip2, x-bzip2)"),
    Directive("deflate.max-compress-size", Type.INT, 128 * 1024,
              doc="largest body compressed, in KiB (0: no limit)"),
    Directive("deflate.min-compress-size", Type.SHORT, 256,
              doc="bodies of at most this many bytes are sent as they are"),
    Directive("deflate.compression-level", Type.ANY, -1, convert=parse_level,
              doc="gzip/deflate level and bzip2 block size, 1-9 (-1: the default)"),
    Directive("deflate.output-buffer-size", Type.SHORT, 0,
              doc="accepted as lighttpd's; unused"),
    Directive("deflate.work-block-size", Type.SHORT, 2048,
              doc="KiB of a file read per compression step"),
    Directive("deflate.max-loadavg", Type.STRING, 0.0, convert=parse_loadavg,
              doc="no compression while the 1-minute load average is above this"),
    Directive("deflate.cache-dir", Type.STRING, "",
              doc="where compressed static files are kept, by ETag"),
    Directive("deflate.precompressed", Type.BOOL, False,
              doc="serve file.br, file.zst, file.gz beside a static file when fresh"),
    Directive("deflate.params", Type.ARRAY_KVANY, Params(), convert=parse_params,
              doc="encoder parameters: BROTLI_PARAM_QUALITY, BROTLI_PARAM_LGWIN, "
                  "BROTLI_PARAM_MODE, ZSTD_c_compressionLevel, ZSTD_c_strategy, "
                  "ZSTD_c_windowLog, BZ2_bzCompressInit.blockSize100k, gzip.level, "
                  "gzip.windowBits, gzip.memLevel, gzip.strategy"),
)


# ------------------------------------------------------------------ negotiation
def accepted_codings(header: str) -> dict[str, float]:
    """Accept-Encoding as coding -> q-value (a q that does not parse counts as 1)."""
    found: dict[str, float] = {}
    for item in header.split(","):
        name, _, rest = item.partition(";")
        name = name.strip(" \t").lower()
        if not name:
            continue
        quality = 1.0
        for param in rest.split(";"):
            key, _, value = param.partition("=")
            if key.strip(" \t").lower() == "q":
                try:
                    quality = float(value.strip(" \t"))
                except ValueError:
                    pass
        found[name] = quality
    return found


def choose_coding(header: str, allowed: tuple[tuple[str, ...], ...]) -> str | None:
    """The coding to answer with: of those allowed that the client accepts (q > 0),
    the highest q, then the first in the server's order; None for identity.  `*` is
    not read, as lighttpd does not."""
    accepted = accepted_codings(header)
    best, best_q = None, 0.0
    for group in allowed:
        for label in group:
            quality = accepted.get(label, 0.0)
            if quality > best_q:
                best, best_q = label, quality
    return best


def type_matches(prefixes: tuple[str, ...], content_type: str | None) -> bool:
    """An answer without a Content-Type matches only when the first prefix is ""."""
    if content_type is None:
        return prefixes[0] == ""
    return content_type.startswith(prefixes)


def _encoding_field(label: str) -> Field:
    return _ENCODING_FIELDS.get(label) or ("Content-Encoding", label)


def _etag_field(coded: str | None) -> Field | None:
    """The ETag field of a compressed answer (`coded`), None to keep the identity's."""
    return ("ETag", coded) if coded else None


def add_vary(response: Response, vary: str | None) -> None:
    """Accept-Encoding added to the answer's Vary (`vary`, None when it has none; no
    core field, so appended as add_header would)."""
    if vary is None:
        headers: list[Any] = response.headers
        headers.append(_VARY_FIELD)
    elif "accept-encoding" not in vary.lower():
        response.set_header("Vary", vary + ",Accept-Encoding")


class AnswerFields:
    """What mod_deflate reads of an answer's headers (the first of a repeated name),
    found in one pass: a dict of every header, made and dropped for each answer, cost
    more than the few look-ups it served.  The ETag and Accept-Ranges fields are kept
    as they are, so that a compressed answer drops them by identity (`unrepeated`:
    neither name came twice, nor a Content-Encoding)."""

    __slots__ = ("content_type", "cache_control", "vary", "etag", "content_encoding",
                 "etag_field", "ranges_field", "unrepeated")

    def __init__(self, headers: list[Any]) -> None:
        self.content_type: str | None = None
        self.cache_control: str | None = None
        self.vary: str | None = None
        self.etag: str | None = None
        self.content_encoding: str | None = None
        self.etag_field: object = None
        self.ranges_field: object = None
        self.unrepeated = True
        for field in headers:
            self._note(field)

    def _note(self, field: Any) -> None:
        """One header; `field` stays the list's own tuple (typed, it would be unpacked
        and made anew), `pair` is read natively."""
        pair: tuple[str, str] = field
        name, value = lower_name(pair[0]), pair[1]
        if name == "content-type":
            if self.content_type is None:
                self.content_type = value
        elif name == "etag":
            if self.etag is None:
                self.etag, self.etag_field = value, field
            else:
                self.unrepeated = False
        elif name == "accept-ranges":
            self.unrepeated = self.unrepeated and self.ranges_field is None
            self.ranges_field = field
        elif name == "vary":
            if self.vary is None:
                self.vary = value
        elif name == "cache-control":
            if self.cache_control is None:
                self.cache_control = value
        elif name == "content-encoding":
            self.unrepeated = False
            if self.content_encoding is None:
                self.content_encoding = value

    def no_transform(self) -> bool:
        control = self.cache_control
        return control is not None and "no-transform" in control.lower()


def coded_etag(etag: str, label: str) -> str:
    return f"{etag[:-1]}-{label}\""


def coded_etag_of(etag: str | None, label: str) -> str | None:
    """A compressed answer's ETag; None where the identity's is missing or not quoted
    (an odd one is kept as it is)."""
    return coded_etag(etag, label) if etag and etag.endswith('"') else None


def _without(headers: list[Any], first: object, second: object) -> list[Any] | None:
    """`headers` without the fields `first` and `second` (found by identity; None
    stands for no field); None when a field was not there (the list was made anew,
    its tuples with it)."""
    kept = [field for field in headers if field is not first and field is not second]
    if len(kept) != len(headers) - (first is not None) - (second is not None):
        return None
    return kept


# ------------------------------------------------------------------ bodies
def read_parts(parts: list, step: int) -> Iterator[bytes]:
    """The bytes of body parts (bytes, or file ranges read `step` bytes at a time)."""
    for part in parts:
        if type(part) is not tuple:
            yield part
            continue
        fd, offset, length = part[0], part[1], part[2]
        end = offset + length
        while offset < end:
            data = os.pread(fd, min(step, end - offset), offset)
            if not data:
                raise OSError(errno.EIO, "the file shrank while it was compressed")
            offset += len(data)
            yield data


class CodedOutput:
    """Compressed bytes: in memory up to SPILL_AT, then in a spool file."""

    __slots__ = ("upload_dirs", "run", "run_size", "spool", "parts")

    def __init__(self, upload_dirs: tuple[str, ...]) -> None:
        self.upload_dirs = upload_dirs
        self.run: list[bytes] = []
        self.run_size = 0
        self.spool: Spool | None = None
        self.parts: list = []

    def add(self, data: bytes) -> None:
        if data:
            self.run.append(data)
            self.run_size += len(data)
            if self.run_size > SPILL_AT:
                self._spill()

    def _spill(self) -> None:
        if self.spool is None:
            self.spool = Spool(self.upload_dirs)
        self.parts.append(self.spool.write(self.run))
        self.run, self.run_size = [], 0

    def finish(self) -> list:
        """The output as body parts; the spool keeps no share of its own."""
        if self.spool is not None:
            if self.run:
                self._spill()
            self.spool.close()
        elif self.run:
            self.parts.append(b"".join(self.run))
        return self.parts

    def discard(self) -> None:
        for part in self.finish():
            if type(part) is tuple:
                part[3].release()


def compress_into(encoder: Encoder, chunks: Iterator[bytes], sink: Any) -> None:
    """Everything `chunks` yields, coded, into `sink.add`."""
    for chunk in chunks:
        sink.add(encoder.encode(chunk))
    sink.add(encoder.finish())


@mypyc_attr(native_class=False)    # mypyc builds no subclass of OSError
class _CacheDirError(OSError):
    """The cache dir refused a file (permissions, space): compress in memory."""


class _FileSink:
    """Compressed bytes written to a cache file."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def add(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as err:
                raise _CacheDirError(err.errno, err.strerror) from None
            view = view[written:]


def set_body(response: Response, parts: list, replayable: bool) -> None:
    """Replace the body (its files closed) by `parts`, which it now owns."""
    response.reset_body()
    for part in parts:
        if type(part) is not tuple:
            response.write(part)
        elif len(part) == 4:
            response.send_shared_range(part[3], part[1], part[2])
        else:
            response.send_file_range(*part)
    body = response.body
    response.replayable = replayable and len(body) <= 1 and \
        (not response.files or len(body[0]) == 4)      # bytes, or a shared file range


class Variant:
    """A kept compressed variant: its parts (bytes, or ranges of a file the table
    holds a share of), the header fields its answers carry in place of the identity's
    (`etag_field`: None where the identity's ETag is not quoted and stays as it is),
    and what its bytes were made from (Variant.made_from)."""

    __slots__ = ("parts", "label", "coded", "replayable", "etag_field", "encoding_field",
                 "etag", "size", "values", "text")

    def __init__(self, label: str, coded: str | None, etag: str, size: int, values: dict,
                 text: bool) -> None:
        self.parts: tuple = ()       # set when it is kept (KeptVariants.keep)
        self.label = label
        self.coded = coded
        self.replayable = True       # as set_body judges a whole file's parts
        self.etag_field = _etag_field(coded)
        self.encoding_field: Field = _encoding_field(label)
        self.etag, self.size, self.values, self.text = etag, size, values, text

    def made_from(self, etag: str, size: int, text: bool) -> bool:
        """Whether the file's version (`etag`, `size`) and brotli's mode, which reads
        the type (`text`), are those the variant was made with."""
        return self.etag == etag and self.size == size and self.text == text

    def answer(self, response: Response) -> None:
        """The variant as the body of `response` (whose own is closed): each file
        range with a share of its own."""
        response.reset_body()
        for part in self.parts:
            if type(part) is bytes:
                response.write(part)
            else:
                kept: tuple[int, int, int, SharedFd] = part
                response.send_shared_range(kept[3].acquire(), kept[1], kept[2])
        response.replayable = self.replayable


class KeptVariants:
    """The compressed variants of whole static files made this second, by file, then
    coding and config block (its `values`, the same dict for each request in it):
    bytes, or ranges of a file (the cache dir's, or a spool) whose fd the table shares
    with the answers sending it, so that a kept variant costs no stat, open or
    compression.  Emptied once a second, and when they would hold more than
    MAX_BYTES in memory or MAX_FILES open files."""

    MAX_BYTES = 8 << 20
    MAX_FILES = 64

    __slots__ = ("entries", "size", "files")

    def __init__(self) -> None:
        self.entries: dict[str, list[Variant]] = {}
        self.size = 0
        self.files = 0

    def find(self, path: str, label: str, values: dict) -> Variant | None:
        """The variant of the file at `path` in the coding `label` made under `values`
        (of whichever version: Variant.made_from tells)."""
        kept = self.entries.get(path)
        if kept is not None:
            for variant in kept:
                if variant.values is values and variant.label == label:
                    return variant
        return None

    def keep(self, path: str, parts: list, made: Variant) -> list:
        """Keep the variant `parts` (which an answer owns) of the file at `path`, as
        `made` says (its parts are set here), in place of another version's; the parts
        that answer sends now, its file ranges sharing their fd with the table."""
        shared = [_shared_part(part) for part in parts]
        made.parts = tuple(shared)
        made.replayable = len(shared) <= 1
        size = sum(len(part) for part in shared if type(part) is bytes)
        files = _file_shares([made])
        older = self.find(path, made.label, made.values)
        if older is not None:
            self._drop(path, older)
        if self.size + size > self.MAX_BYTES or self.files + len(files) > self.MAX_FILES:
            self.clear()
        for share in files.values():
            share.acquire()
        self.entries.setdefault(path, []).append(made)
        self.size += size
        self.files += len(files)
        return shared

    def _drop(self, path: str, older: Variant) -> None:
        """Forget the variant `older` of the file at `path` (another version)."""
        self.entries[path].remove(older)
        for share in _file_shares([older]).values():
            share.release()
            self.files -= 1
        self.size -= sum(len(part) for part in older.parts if type(part) is bytes)

    def clear(self) -> None:
        """Forget every variant; a file goes once the answers sending it are done."""
        for share in _file_shares(kept for variants in self.entries.values()
                                  for kept in variants).values():
            share.release()
        self.entries.clear()
        self.size = self.files = 0


def _file_shares(variants: Iterable[Variant]) -> dict[int, SharedFd]:
    """The shares of the files `variants` send, each once."""
    return {id(part[3]): part[3] for kept in variants for part in kept.parts
            if type(part) is not bytes}


def _shared_part(part: Any) -> Any:
    """A body part whose file, if it has one, is held through a SharedFd."""
    if type(part) is bytes or len(part) == 4:
        return part
    fd, offset, length = part
    return (fd, offset, length, SharedFd(fd).acquire())


class _Source:
    """What is compressed: the answer's own body, or for a static 206 the whole file
    reopened (lighttpd compresses the whole entity and ignores Range)."""

    __slots__ = ("parts", "size", "fd")

    def __init__(self, parts: list, size: int, fd: int = -1) -> None:
        self.parts, self.size, self.fd = parts, size, fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _whole_file(request: Request, etag: str) -> _Source | None:
    """The file a static 206 answered from, whole, if it still has the same ETag."""
    if not etag:
        return None
    values = request.values
    try:
        if values["server.follow-symlink"]:
            fd, st = static.open_checked(request.physical_path, request.physical_stat())
        else:
            fd, st = static.open_file_without_symlinks(request.physical_path)
    except OSError:
        return None
    if static.stat_etag(st, values) != etag:
        os.close(fd)
        return None
    return _Source([(fd, 0, st.st_size)], st.st_size, fd)


# mod_compress's keys, read as lighttpd 1.4.69 reads them: as the deflate.* keys that
# replaced them, with a DEPRECATED warning
RENAMED_KEYS: Final = {"compress.filetype": "deflate.mimetypes",
                       "compress.allowed-encodings": "deflate.allowed-encodings",
                       "compress.cache-dir": "deflate.cache-dir",
                       "compress.max-filesize": "deflate.max-compress-size",
                       "compress.max-loadavg": "deflate.max-loadavg"}


class Module(BaseModule):
    name = "deflate"
    directives = DIRECTIVES
    renamed_keys = RENAMED_KEYS
    replay_safe = True        # decided by the settings, the file, and Accept-Encoding
    keyed_headers = ("accept-encoding",)

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.loadavg = 0.0
        self.reported: set[str] = set()
        self.kept = KeptVariants()
        # (Accept-Encoding, deflate.allowed-encodings) -> the coding: clients send a
        # handful of distinct values, each read once
        # Accept-Encoding -> (the deflate.allowed-encodings it was chosen from, the
        # coding): keyed by the field alone, as a tuple key is hashed whole each time
        self.codings: dict[str, tuple[tuple, str | None]] = {}

    @classmethod
    def prepare(cls, tree: Any, checked: Any, compiled: Any) -> None:
        """The deflate.params entries that are ignored join the config's warnings
        (printed by -tt, logged when the server starts), as lighttpd reports them
        when it loads the config."""
        for block in tree.blocks:
            params = checked.settings.get(block.index, {}).get("deflate.params")
            entry = block.keys.get("deflate.params")
            if params is not None and entry is not None:
                checked.warnings.extend(f"{entry.position}: mod_deflate: {problem}"
                                        for problem in params.problems)

    def allows_replay(self, request: Request) -> bool:
        """Not where a load limit may switch compression off from one second to the
        next."""
        return not request.values["deflate.max-loadavg"]

    def handle_trigger(self, now: float) -> None:
        self.loadavg = os.getloadavg()[0]
        self.kept.clear()

    def _log_once(self, key: str, message: str) -> None:
        """A problem of the disk is logged once by each worker, not with every answer
        it touches."""
        if key not in self.reported:
            self.reported.add(key)
            self._log(message)

    def _log(self, message: str) -> None:
        if self.services is not None:
            self.services.log_error("mod_deflate.c", message)

    # ------------------------------------------------------------ the hook
    def handle_response_start(self, request: Request) -> None:
        values = request.values
        prefixes = values["deflate.mimetypes"]
        response = request.response
        status = response.status or 200       # a stream may start before its status
        if response.encoder is not None or response.started or \
                status < 200 or status == 204 or status == 205:     # no entity to code
            return
        fields = AnswerFields(response.headers)
        if fields.content_encoding is not None or fields.no_transform():
            return
        if values["deflate.precompressed"]:
            if serve_sibling(request):
                return
            fields = AnswerFields(response.headers)      # it may have said Vary
        if not prefixes:
            return
        if status == 206:
            self._partial(request, prefixes)
            return
        if not type_matches(prefixes, fields.content_type):
            return
        streams = response.streaming and values["server.stream-response-body"] != 0
        if not self._size_fits(_entity_size(request, streams), values):
            return
        add_vary(response, fields.vary)
        label = self._coding(request)
        if label is None or request.method == "HEAD" or status == 304:
            return
        if streams:
            self._start_stream(request, label)
            return
        etag = fields.etag or ""
        if self._not_modified(request, etag, label):
            return
        # the body's list is read, never changed: set_body gives the answer a new one
        self._compress_whole(request, label, etag, _Source(response.body, response.length),
                             fields)

    def _coding(self, request: Request) -> str | None:
        accept = request.headers.get("accept-encoding")
        if accept is None:
            return None
        values = request.values
        label = self._chosen_coding(accept, values["deflate.allowed-encodings"])
        limit: float = values["deflate.max-loadavg"]
        if label is None or (limit and limit < self.loadavg):
            return None
        return label

    def _chosen_coding(self, accept: str, allowed: tuple[tuple[str, ...], ...]) -> str | None:
        """choose_coding, remembered (MAX_CODINGS values at most; for one list of
        allowed codings per value: another block's list chooses again)."""
        codings = self.codings
        kept = codings.get(accept)
        if kept is not None and kept[0] is allowed:
            return kept[1]
        if len(codings) >= MAX_CODINGS:
            codings.clear()
        label = choose_coding(accept, allowed)
        codings[accept] = (allowed, label)
        return label

    @staticmethod
    def _size_fits(size: int | None, values: dict) -> bool:
        """Within deflate.min-compress-size and max-compress-size (a size not known
        yet, a stream's, fits)."""
        if size is None:
            return True
        most: int = values["deflate.max-compress-size"]      # typed: native arithmetic
        least: int = values["deflate.min-compress-size"]
        return size > least and (not most or size <= most << 10)

    def _partial(self, request: Request, prefixes: tuple[str, ...]) -> None:
        """A static 206: the whole file compressed as a 200, as lighttpd answers a
        Range request it compresses; any other 206 is left as it is."""
        response = request.response
        values = request.values
        content_type = static.content_type_for(values, request.physical_path)
        if response.streaming or request.handler is not None or \
                not type_matches(prefixes, content_type) or \
                not self._size_fits(_entity_size(request, False), values):
            return
        add_vary(response, response.get_header("Vary"))
        label = self._coding(request)
        if label is None or request.method == "HEAD":
            return
        etag = response.get_header("ETag") or ""
        source = _whole_file(request, etag)
        if source is None:
            return
        response.set_header("Content-Type", content_type)
        response.remove_header("Content-Range")
        response.status = 200
        if self._not_modified(request, etag, label):
            source.close()
            return
        self._compress_whole(request, label, etag, source)

    def _not_modified(self, request: Request, etag: str, label: str) -> bool:
        """If-None-Match names the compressed variant's ETag: 304 with it."""
        response = request.response
        inm = request.headers.get("if-none-match")
        if not etag or not etag.endswith('"') or inm is None or response.status >= 300:
            return False
        coded = coded_etag(etag, label)
        if not static.etag_matches(coded, inm):
            return False
        replayable = response.replayable
        response.reset_body()
        response.replayable = replayable
        response.status = 304
        response.set_header("ETag", coded)
        response.remove_header("Accept-Ranges")
        return True

    def _start_stream(self, request: Request, label: str) -> None:
        """A streamed answer: what was written so far is coded now, the rest as it is
        written (Response.encoder); its length is unknown from here on."""
        response = request.response
        values = request.values
        encoder = make_encoder(label, values["deflate.compression-level"],
                               values["deflate.params"], _is_text(response), flushing=True)
        written = list(response.body)
        output = CodedOutput(self._upload_dirs(request))
        for chunk in read_parts(written, values["deflate.work-block-size"] << 10):
            output.add(encoder.encode(chunk))
        set_body(response, output.finish(), False)
        self._label_answer(response,
                           _etag_field(coded_etag_of(response.get_header("ETag"), label)),
                           _encoding_field(label), None)
        response.remove_header("Content-Length")
        response.encoder = encoder

    def _compress_whole(self, request: Request, label: str, etag: str,
                        source: _Source, fields: AnswerFields | None = None) -> None:
        """The whole entity compressed (a static file's as kept this second, else from
        deflate.cache-dir, else now); `fields`: the answer's, when read before."""
        response = request.response
        made = None
        if request.handler is None and etag:
            values = request.values
            text = label == "br" and _is_text(response)
            variant = self.kept.find(request.physical_path, label, values)
            if variant is not None and variant.made_from(etag, source.size, text):
                source.close()
                variant.answer(response)
                self._label_answer(response, variant.etag_field, variant.encoding_field,
                                   fields)
                return
            made = Variant(label, coded_etag_of(etag, label), etag, source.size, values, text)
        coded = made.coded if made is not None else coded_etag_of(etag, label)
        try:
            if made is not None:
                parts, whole_file = self._file_variant(request, made, source)
            else:
                parts, whole_file = self._compressed(request, label, source), False
        except OSError as err:
            self._log(f"compressing {request.physical_path or request.uri_path} "
                      f"failed: {err}")
            return
        finally:
            source.close()
        # a static file's compressed snapshot held in memory may be replayed for the
        # rest of the second, as a small file's own bytes are (worker/answercache.py)
        set_body(response, parts, response.replayable or whole_file)
        self._label_answer(response, _etag_field(coded), _encoding_field(label), fields)

    def _file_variant(self, request: Request, made: Variant,
                      source: _Source) -> tuple[list, bool]:
        """A static answer's compressed body, and whether it is the whole file's: from
        deflate.cache-dir, else compressed now; kept for the rest of the second as
        `made` (not yet kept) says."""
        label, coded, etag = made.label, made.coded, made.etag
        st = self._whole_file_stat(request, etag, source)
        if st is None:
            return self._compressed(request, label, source), False
        parts = None
        if coded is not None and request.values["deflate.cache-dir"] and \
                etag.startswith('"'):
            parts = self._from_cache(request, label, coded, source)
        if parts is None:
            parts = self._compressed(request, label, source)
        if not settled(st):       # another change this tick would keep the same ETag
            return parts, True
        return self.kept.keep(request.physical_path, parts, made), True

    @staticmethod
    def _label_answer(response: Response, etag_field: Field | None, encoding_field: Field,
                      fields: AnswerFields | None) -> None:
        """Content-Encoding and the coded ETag (`etag_field`; None keeps the
        identity's) in place of the identity's, and no Accept-Ranges: the list rebuilt
        once, the fields `fields` found dropped by identity (no name compared again)
        unless the list was made anew since."""
        headers = _without(response.headers, fields.etag_field if etag_field else None,
                           fields.ranges_field) \
            if fields is not None and fields.unrepeated else None
        if headers is None:
            replaced = _CODED_REPLACES if etag_field else _CODED_REPLACES_BUT_ETAG
            headers = [field for field in response.headers
                       if lower_name(field[0]) not in replaced]
        if etag_field is not None:
            headers.append(etag_field)
        headers.append(encoding_field)
        response.headers = headers

    def _compressed(self, request: Request, label: str, source: _Source) -> list:
        output = CodedOutput(self._upload_dirs(request))
        try:
            compress_source(request, label, source, output)
        except OSError:
            output.discard()
            raise
        return output.finish()

    def _upload_dirs(self, request: Request) -> tuple[str, ...]:
        if self.services is not None:
            return self.services.upload_dirs
        return tuple(request.values["server.upload-dirs"])

    @staticmethod
    def _whole_file_stat(request: Request, etag: str,
                         source: _Source) -> os.stat_result | None:
        """The file's stat if the body is the whole static file the ETag was made for
        (a fresh stat: the stat cache may be a second behind the file the handler
        opened), else None."""
        try:
            st = os.stat(request.physical_path)
        except OSError:
            return None
        if source.size != st.st_size or static.stat_etag(st, request.values) != etag:
            return None
        return st

    def _from_cache(self, request: Request, label: str, coded: str,
                    source: _Source) -> list | None:
        """The compressed file from deflate.cache-dir, made first if it is not there;
        None when the cache dir cannot take it (the answer is compressed in memory)."""
        cache_dir = request.values["deflate.cache-dir"]
        path = cache_path(cache_dir, request.physical_path, coded)
        try:
            fd = _open_cache_file(path)
            if fd < 0:
                fd = _make_cache_file(request, label, path, source)
        except _CacheDirError as err:
            self._log_once(f"cache {cache_dir} {err.errno}",
                           f"deflate.cache-dir {cache_dir}: {err}")
            return None
        return _file_part(fd)


def compress_source(request: Request, label: str, source: _Source, sink: Any) -> None:
    """Code what `source` holds into `sink.add`, in deflate.work-block-size steps."""
    values = request.values
    encoder = make_encoder(label, values["deflate.compression-level"],
                           values["deflate.params"], _is_text(request.response),
                           size=source.size)
    compress_into(encoder, read_parts(source.parts, values["deflate.work-block-size"] << 10),
                  sink)


# ------------------------------------------------------------ precompressed siblings
def serve_sibling(request: Request) -> bool:
    """deflate.precompressed: a static file's fresh sibling answers in its place; True
    when the answer is settled (a sibling sent or a 304 for its ETag), False when
    compression goes on as without siblings (Vary already added when one exists)."""
    response = request.response
    if request.handler is not None or response.streaming or not request.physical_path \
            or response.status not in (200, 206, 304):
        return False
    values = request.values
    siblings = fresh_siblings(request.physical_path, values["deflate.allowed-encodings"])
    if not siblings:
        return False
    add_vary(response, response.get_header("Vary"))
    accept = request.headers.get("accept-encoding")
    if accept is None or request.method == "HEAD" or response.status == 304:
        return False
    label = choose_coding(accept, tuple((name,) for name in siblings))
    if label is None:
        return False
    return _send_sibling(request, label, siblings[label])


def fresh_siblings(path: str, allowed: tuple[tuple[str, ...], ...]) -> dict[str, str]:
    """coding -> sibling path, in the server's order, for the allowed codings whose
    sibling is a regular file not older than `path` itself."""
    try:
        modified = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    found: dict[str, str] = {}
    for label in (name for group in allowed for name in group if name in SIBLING_SUFFIXES):
        sibling = path + SIBLING_SUFFIXES[label]
        try:
            st = os.stat(sibling)
        except OSError:
            continue
        if static.is_regular(st) and st.st_mtime_ns >= modified:
            found[label] = sibling
    return found


def _send_sibling(request: Request, label: str, path: str) -> bool:
    """The sibling as the whole answer (a Range is answered 200 whole, as for any
    compressed variant); its ETag is its own, with the coding appended."""
    response = request.response
    values = request.values
    try:
        fd, st = _open_sibling(path, values["server.follow-symlink"])
    except OSError:
        return False
    etag = coded_etag(static.stat_etag(st, values), label) \
        if values.get("static-file.etags", True) else ""
    content_type = static.content_type_for(values, request.physical_path)
    response.remove_header("Content-Range")
    response.status = 200
    response.set_header("Content-Type", content_type)
    inm = request.headers.get("if-none-match")
    if etag and inm is not None and static.etag_matches(etag, inm):
        os.close(fd)
        response.reset_body()
        response.status = 304
    else:
        try:
            set_body(response, _file_part(fd), True)
        except OSError:
            return False
    if etag:
        response.set_header("ETag", etag)
    else:
        response.remove_header("ETag")
    response.set_header("Content-Encoding", label)
    response.remove_header("Accept-Ranges")
    return True


def _open_sibling(path: str, follow_symlinks: bool) -> tuple[int, os.stat_result]:
    """The sibling opened as the file itself would be (through no symlink unless
    server.follow-symlink), and its fstat; OSError when it is no regular file."""
    if not follow_symlinks:
        return static.open_file_without_symlinks(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not static.is_regular(st):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
    return fd, st


def _open_cache_file(path: str) -> int:
    """The kept compressed file, -1 when there is none yet; _CacheDirError when the
    cache dir cannot be read."""
    try:
        return os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return -1
    except OSError as err:
        raise _CacheDirError(err.errno, err.strerror, path) from None


def _make_cache_file(request: Request, label: str, path: str, source: _Source) -> int:
    """Compress into a temp file beside `path`, then rename it there: the open fd of
    what was written.  _CacheDirError when the cache dir refuses it."""
    directory, name = os.path.split(path)
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=name + ".", dir=directory)
    except OSError as err:
        raise _CacheDirError(err.errno, err.strerror, directory) from None
    try:
        compress_source(request, label, source, _FileSink(fd))
        os.rename(temp, path)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    return fd


def cache_path(cache_dir: str, physical_path: str, coded_etag_value: str) -> str:
    """lighttpd's name: the cache dir, the file's path, `-`, the ETag without quotes."""
    return f"{cache_dir.rstrip('/')}/{physical_path.lstrip('/')}-{coded_etag_value[1:-1]}"


def _file_part(fd: int) -> list:
    """A compressed file as a body part: read into memory up to static.SMALL_FILE, as
    a small static file is, else a file range for sendfile (which copies nothing on
    its way to the socket)."""
    try:
        size = os.fstat(fd).st_size
        if size > static.SMALL_FILE:
            return [(fd, 0, size)]
        data = os.pread(fd, size, 0)
    except OSError:
        os.close(fd)
        raise
    os.close(fd)
    return [data]


def _entity_size(request: Request, streams: bool) -> int | None:
    """The size of the body the answer stands for: for a static 304 or 206, the
    file's; for a stream, the length its producer announced, if any."""
    response = request.response
    if streams:
        declared = response.get_header("Content-Length")
        return int(declared) if declared is not None and declared.isdigit() else None
    if response.status not in (206, 304) or request.handler is not None:
        return response.length
    try:
        return request.physical_stat().st_size
    except OSError:
        return 0


def _is_text(response: Response) -> bool:
    content_type = response.get_header("Content-Type")
    return content_type is not None and content_type.startswith("text/")
