"""How mod_accesslog compiles a format, in this process: constant parts go into the
line's template and cost nothing per request, the %t text is made once a second,
and the escaping's shortcut for plain lines changes none."""

from __future__ import annotations

import random
import pytest

from shared import log
from worker.connection import Answer
from worker.http import header_text
from worker.modules import mod_accesslog
from worker.modules.mod_accesslog import DEFAULT_FORMAT, compile_format
from worker.request import Request

from server_util import detached_request


def _request() -> Request:
    """A real Request (the module may run compiled, which checks its types)."""
    request = detached_request(remote_ip="10.0.0.1")
    request.host, request.method = "example.org", "GET"
    request.target = request.target_orig = "/a?b"
    request.headers = {"user-agent": "UA"}
    request.response.status = 200
    request.start = 100.0
    return request


def _answer(end_time: float = 1_700_000_000.5) -> Answer:
    answer = Answer(0, 300, 100, 200, 0, True, 1)
    answer.bytes_out, answer.end_time, answer.end_monotonic = 300, end_time, 100.25
    return answer


def test_constant_parts_are_template_text_and_no_field_is_called_for_them():
    compiled = compile_format("%l 100%% %P|%C|%i|%o|%e|%n text\\t|")
    assert compiled.fields == ()
    escape = mod_accesslog._escaping("default")
    assert compiled.render(_request(), _answer(), escape) == b"- 100% ||||-|- text\t|\n"


def test_the_default_format_has_one_field_per_varying_part():
    compiled = compile_format(DEFAULT_FORMAT)
    assert len(compiled.fields) == 9
    line = compiled.render(_request(), _answer(), mod_accesslog._escaping("default"))
    assert line.endswith(b'"GET /a?b HTTP/1.1" 200 200 "-" "UA"\n')
    assert line.startswith(b"10.0.0.1 example.org - [")


def test_the_time_text_is_made_once_a_second(monkeypatch):
    made = []
    real = mod_accesslog.time.strftime
    monkeypatch.setattr(mod_accesslog.time, "strftime",
                        lambda pattern, when: made.append(when) or real(pattern, when))
    compiled = compile_format("%t")
    escape = mod_accesslog._escaping("default")
    lines = {compiled.render(_request(), _answer(1_700_000_000 + n / 100), escape)
             for n in range(100)}
    assert len(lines) == 1 and len(made) == 1
    compiled.render(_request(), _answer(1_700_000_001.0), escape)
    assert len(made) == 2


@pytest.mark.parametrize("reference", [log.escape_bs, log.escape_json])
def test_the_plain_line_check_lets_through_only_what_escaping_leaves(reference):
    """Each text in a line with quotes around it and a newline, as the default format
    makes it: the line is the escaped text's, and escaping is called only for a
    text with a byte it changes (the fast path is taken for every plain one)."""
    compiled = compile_format('"%{User-Agent}i"')
    called = []

    def escape(text: str) -> str:
        called.append(text)
        return reference(text)

    chooser = random.Random(15)
    alphabet = [chr(c) for c in range(0x80)] + ["é", "€", "\U0001f600", "\udcff"]
    texts = ["plain text", 'q"uote', "back\\slash", "tab\there", "del\x7f", "nul\x00"]
    texts += ["".join(chooser.choices(alphabet, k=chooser.randint(1, 6)))
              for _ in range(5000)]
    for text in texts:
        request = _request()
        request.headers = {"user-agent": header_text(text)}    # held as its octets
        called.clear()
        line = compiled.render(request, _answer(), escape)
        assert line == f'"{reference(text)}"\n'.encode("utf-8", "surrogateescape"), \
            repr(text)
        plain = text.isascii() and log.escape_bs(text) == text
        assert called == ([] if plain else [text]), repr(text)


@pytest.mark.parametrize("name, reference", [("default", log.escape_bs),
                                             ("json", log.escape_json)])
def test_a_line_with_one_text_to_escape_escapes_each_text_from_outside(name, reference):
    compiled = compile_format('%h "%r" %>s "%{Referer}i" "%{User-Agent}i" %{%H"}t')
    request = _request()
    request.target = request.target_orig = '/q"uote\\x01'
    request.headers = {"user-agent": header_text("caf\u00e9 \x7f"), "referer": "plain"}
    line = compiled.render(request, _answer(), mod_accesslog._escaping(name))
    target, agent = reference(request.target), reference("caf\u00e9 \x7f")
    assert line.decode("utf-8", "surrogateescape").startswith(
        f'10.0.0.1 "GET {target} HTTP/1.1" 200 "plain" "{agent}" ')
    assert line.endswith(b'"\n') and target != request.target
