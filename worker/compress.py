"""Content codings for mod_deflate: gzip, deflate, bzip2, brotli and zstd encoders that
take a body in parts (worker/request.py's Encoder), with lighttpd 1.4.69's defaults and
its `deflate.params` names.

zlib and bz2 come with Python; brotli and zstd are used when their libraries import
(`Brotli` and `zstandard` from PyPI).  A coding whose library is missing is simply not
offered, as lighttpd built without it.

lighttpd's choices kept here, so both servers produce the same compressed bytes where
the libraries allow: gzip and deflate at zlib's default level with a 32 KiB window and
memLevel 8, `deflate` as the zlib format (RFC 9110 8.4.1.2), bzip2 with 900 KiB blocks,
brotli at quality 5 (11, the library's default, costs too much per request) and zstd
at its default level 3.

A gzip body whose length is known (a file, an answer complete in memory) is coded with
the smallest window that holds it all: zlib 1.2's output is then the same bytes as with
the configured window (no match can reach further back than the body's start; the
hash table, which decides the matches, is sized by memLevel alone), and allocating and
clearing less costs about 40 us less on a 1 KiB body.  zlib-ng is left with the
configured window, as its matching is its own.  The `deflate` coding keeps its window
anyway: the zlib format writes it in its header.
"""

from __future__ import annotations

import bz2
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

try:
    import brotli
except ImportError:      # the coding is not offered
    brotli = None        # type: ignore[assignment]
try:
    import zstandard
except ImportError:      # the coding is not offered
    zstandard = None     # type: ignore[assignment]

from .request import Encoder

# zlib's MIN_LOOKAHEAD: a match reaches back at most the window's size less this
_MIN_LOOKAHEAD = 262
_SMALLEST_WINDOW_BITS = 9
_SAME_BYTES_IN_A_FITTED_WINDOW = "zlib-ng" not in zlib.ZLIB_RUNTIME_VERSION


class _Coder(Encoder, Protocol):
    """An encoder that can also hand out what it holds without ending its stream."""

    def flush(self) -> bytes: ...


@dataclass(frozen=True, eq=False)
class Params:
    """Encoder settings (lighttpd's encparms); `problems` are the `deflate.params`
    entries that were ignored, each as lighttpd words it.  Compared and hashed by
    identity, as object's are: a config makes one for each `deflate.params` it
    sets, and mod_deflate looks its kept variants up by it with every answer (a
    dataclass's own hash would be an interpreted call over every field)."""

    gzip_level: int = -1
    gzip_window_bits: int = 15
    gzip_mem_level: int = 8
    gzip_strategy: int = 0
    bzip2_block_size: int = 9
    brotli_quality: int = 5
    brotli_window: int = 22
    brotli_mode: int = 0
    zstd_level: int = 3
    zstd_strategy: int = 0
    zstd_window_log: int = 0
    given: frozenset[str] = frozenset()     # the fields the config set
    problems: tuple[str, ...] = field(default=(), compare=False)


# deflate.params key (case-insensitive) -> (Params field, lowest, highest); None: any int
_PARAMS: dict[str, tuple[str, int | None, int | None]] = {
    "brotli_param_quality": ("brotli_quality", 0, 11),
    "brotli_param_lgwin": ("brotli_window", 10, 24),
    "brotli_param_mode": ("brotli_mode", 0, 2),
    "zstd_c_compressionlevel": ("zstd_level", None, None),
    "zstd_c_strategy": ("zstd_strategy", None, None),
    "zstd_c_windowlog": ("zstd_window_log", None, None),
    "bz2_bzcompressinit.blocksize100k": ("bzip2_block_size", 1, 9),
    "gzip.level": ("gzip_level", 1, 9),
    "gzip.windowbits": ("gzip_window_bits", 9, 15),
    "gzip.memlevel": ("gzip_mem_level", 1, 9),
    "gzip.strategy": ("gzip_strategy", 0, 4),
}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _within(number: int, low: int | None, high: int | None) -> bool:
    return (low is None or low <= number) and (high is None or number <= high)


def parse_params(pairs: Any) -> Params:
    """`deflate.params` (key => value) as Params.  As lighttpd, an unknown key or a
    value out of range is reported (Params.problems) and ignored, never fatal."""
    values: dict[str, int] = {}
    problems: list[str] = []
    for key, value in pairs:
        name = str(key)
        known = _PARAMS.get(name.lower())
        if known is None:
            problems.append(f"unrecognized param: {name}")
            continue
        attribute, low, high = known
        number = _as_int(value)
        if number is None or not _within(number, low, high):
            problems.append(f"invalid value for {name}")
            continue
        values[attribute] = number
    return replace(Params(), given=frozenset(values), problems=tuple(problems), **values)


class _Flushing:
    """An encoder whose every part is sent as soon as it is coded: a streamed answer's
    bytes reach the client as the backend produces them (at some cost in ratio),
    rather than when the coder's window fills."""

    __slots__ = ("coder",)

    def __init__(self, coder: _Coder) -> None:
        self.coder = coder

    def encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self.coder.encode(data) + self.coder.flush()

    def finish(self) -> bytes:
        return self.coder.finish()


class _Zlib:
    """gzip (`wbits` 16+) or the zlib format (`deflate`)."""

    __slots__ = ("stream",)

    def __init__(self, level: int, wbits: int, params: Params) -> None:
        self.stream = zlib.compressobj(level, zlib.DEFLATED, wbits, params.gzip_mem_level,
                                       params.gzip_strategy)

    def encode(self, data: bytes) -> bytes:
        return self.stream.compress(data)

    def finish(self) -> bytes:
        return self.stream.flush()


    def flush(self) -> bytes:
        return self.stream.flush(zlib.Z_SYNC_FLUSH)


class _Bzip2:
    __slots__ = ("stream",)

    def __init__(self, block_size: int) -> None:
        self.stream = bz2.BZ2Compressor(block_size)

    def encode(self, data: bytes) -> bytes:
        return self.stream.compress(data)

    def finish(self) -> bytes:
        return self.stream.flush()


    def flush(self) -> bytes:
        return b""          # bzip2 cannot end a block early: its output waits


class _Brotli:
    __slots__ = ("stream",)

    def __init__(self, params: Params, text: bool) -> None:
        mode = params.brotli_mode
        if text and "brotli_mode" not in params.given:
            mode = brotli.MODE_TEXT
        self.stream = brotli.Compressor(mode=mode, quality=params.brotli_quality,
                                        lgwin=params.brotli_window)

    def encode(self, data: bytes) -> bytes:
        return self.stream.process(data)

    def finish(self) -> bytes:
        return self.stream.finish()


    def flush(self) -> bytes:
        return self.stream.flush()


class _Zstd:
    __slots__ = ("stream",)

    def __init__(self, params: Params) -> None:
        tuned = {name: value for name, value in (("strategy", params.zstd_strategy),
                                                 ("window_log", params.zstd_window_log))
                 if value}
        if tuned:
            compressor = zstandard.ZstdCompressor(
                compression_params=zstandard.ZstdCompressionParameters.from_level(
                    params.zstd_level, **tuned))
        else:
            compressor = zstandard.ZstdCompressor(level=params.zstd_level)
        self.stream = compressor.compressobj()

    def encode(self, data: bytes) -> bytes:
        return self.stream.compress(data)

    def finish(self) -> bytes:
        return self.stream.flush()


    def flush(self) -> bytes:
        return self.stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


def _zlib_level(level: int, params: Params) -> int:
    """deflate.compression-level (1-9, -1: zlib's default), unless gzip.level is set."""
    return params.gzip_level if "gzip_level" in params.given else level


def gzip_window(bits: int, size: int | None) -> int:
    """The window for a gzip body of `size` bytes (None: not known): the smallest of
    at least 512 bytes whose reach, 262 bytes short of its size in zlib, covers the
    body, unless `bits` (gzip.windowBits) is smaller."""
    if size is None or not _SAME_BYTES_IN_A_FITTED_WINDOW:
        return bits
    return min(bits, max(_SMALLEST_WINDOW_BITS, (size + _MIN_LOOKAHEAD - 1).bit_length()))


def _gzip(level: int, params: Params, _text: bool, size: int | None) -> _Coder:
    return _Zlib(_zlib_level(level, params), 16 + gzip_window(params.gzip_window_bits, size),
                 params)


def _deflate(level: int, params: Params, _text: bool, _size: int | None) -> _Coder:
    return _Zlib(_zlib_level(level, params), params.gzip_window_bits, params)


def _bzip2(level: int, params: Params, _text: bool, _size: int | None) -> _Coder:
    """deflate.compression-level is the block size (in 100 KiB) unless the params set it."""
    if "bzip2_block_size" in params.given or level < 1:
        return _Bzip2(params.bzip2_block_size)
    return _Bzip2(level)


# label -> how to make its encoder from (deflate.compression-level, params, text body,
# the body's size when it is known)
ENCODERS: dict[str, Callable[[int, Params, bool, int | None], _Coder]] = {
    "gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "bzip2": _bzip2, "x-bzip2": _bzip2,
}
if brotli is not None:
    ENCODERS["br"] = lambda _level, p, text, _size: _Brotli(p, text)
if zstandard is not None:
    ENCODERS["zstd"] = lambda _level, p, _text, _size: _Zstd(p)


def make_encoder(label: str, level: int, params: Params, text: bool,
                 flushing: bool = False, size: int | None = None) -> Encoder:
    """A fresh encoder for the coding `label` (one of ENCODERS); `flushing`: each
    part's bytes come out of encode at once (a streamed answer); `size`: the length
    of the whole body when it is known."""
    coder = ENCODERS[label](level, params, text, size)
    return _Flushing(coder) if flushing else coder
