"""shared/log.py: access log escaping and buffering."""

from __future__ import annotations

import os

from hypothesis import given, strategies as st

from shared.log import _BS, _JSON, PLAIN, LogFile, escape_bs, escape_json

# text as a request carries it: ASCII, controls, quotes, UTF-8 and undecodable bytes
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF) |
               st.sampled_from(["\udc80", "\udcff", '"', "\\"]), max_size=12)


def _bytes_of(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@given(TEXT)
def test_bs_escaping_is_the_byte_rule(text):
    data = _bytes_of(text)
    expected = text if all(b in PLAIN for b in data) else "".join(_BS[b] for b in data)
    assert escape_bs(text) == expected


@given(TEXT)
def test_json_escaping_is_the_byte_rule(text):
    data = _bytes_of(text)
    if all(b in PLAIN or b >= 0x80 for b in data):
        assert escape_json(text) == text
    else:
        assert _bytes_of(escape_json(text)) == b"".join(
            _JSON[b].encode() if b < 0x80 else bytes((b,)) for b in data)


def test_buffered_lines_wait_for_flush_reopen_or_close(tmp_path):
    path = tmp_path / "access.log"
    logfile = LogFile(str(path), buffered=True)
    logfile.write(b"one\n")
    assert path.read_bytes() == b""
    logfile.flush()
    assert path.read_bytes() == b"one\n"
    logfile.write(b"two\n")
    os.rename(path, tmp_path / "access.log.1")
    logfile.reopen()                       # lines logged before a rotation stay in it
    assert (tmp_path / "access.log.1").read_bytes() == b"one\ntwo\n"
    logfile.write(b"three\n")
    logfile.close()
    assert path.read_bytes() == b"three\n"


def test_a_full_buffer_is_written_at_once(tmp_path):
    path = tmp_path / "access.log"
    logfile = LogFile(str(path), buffered=True)
    line = b"x" * 99 + b"\n"
    for _ in range(100):
        logfile.write(line)
    assert len(path.read_bytes()) >= 8192 and len(path.read_bytes()) % 100 == 0
    logfile.close()
    assert path.read_bytes() == line * 100
