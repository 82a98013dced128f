"""mod_expire's grammar, `(access|now|modification) [plus] <num> <unit> ...`, as lighttpd
1.4.69 reads it: the parsed offsets, the errors in lighttpd's words, the same values
accepted and refused as `lighttpd -tt` does, and a bad value reported at its line.
"""

from __future__ import annotations

import pytest

from procutil import run_cli, run_lighttpd
from shared.config.directives import DirectiveValueError
from worker.modules.mod_expire import Expiry, parse_expiry

DAY = 86400
PARSED = {
    "access plus 1 years": Expiry(False, 360 * DAY),        # lighttpd's year: 12 months
    "access 1 year": Expiry(False, 360 * DAY),
    "now plus 5 seconds": Expiry(False, 5),
    "modification plus 1 years 2 days": Expiry(True, 362 * DAY),
    "access 2 weeks 1 day 3 hours 4 minutes 5 seconds":
        Expiry(False, 15 * DAY + 3 * 3600 + 4 * 60 + 5),
    "access plus 1 months": Expiry(False, 30 * DAY),
    "access 1 days ": Expiry(False, DAY),                    # a trailing space ends it
    "access plus -5 seconds": Expiry(False, -5),             # strtol takes a sign
    "access plus 100 years": Expiry(False, 100 * 360 * DAY - 2**32),   # a C int wraps
    "access plus 0 seconds": Expiry(False, 0),
}
REFUSED = {
    "": "mod_expire empty string",
    "later plus 1 days": "invalid <base>: later plus 1 days",
    "Access plus 1 days": "invalid <base>",
    "access": "invalid <base>",
    "access plus 1 hour 30 min": "unknown type: min",
    "access plus 1 days 2": "missing space after <num>: 2",
    "access plus x days": "missing <type> after <num>: x days",
    "access plus 1days": "missing space after <num>: 1days",
    "access plus  1 days": "unknown type: 1 days",
    "access 1  days": "unknown type:  days",
    "access plus 1 fortnights": "unknown type: fortnights",
    "modification plus": "missing space after <num>: plus",
}


@pytest.mark.parametrize("text", sorted(PARSED))
def test_the_offsets_of_good_values(text):
    assert parse_expiry(text) == PARSED[text]


@pytest.mark.parametrize("text", sorted(REFUSED))
def test_bad_values_are_refused_in_lighttpds_words(text):
    with pytest.raises(DirectiveValueError) as refused:
        parse_expiry(text)
    assert str(refused.value).startswith(REFUSED[text])


def _conf(tmp_path, value: str, key: str = "expire.url") -> str:
    conf = tmp_path / "expire.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_expire")\n'
                    f'{key} = ("/a/" => "{value}")\n')
    return str(conf)


def test_lighttpd_accepts_and_refuses_the_same_values(tmp_path):
    verdicts = {text: run_lighttpd("-tt", "-f", _conf(tmp_path, text)).returncode == 0
                for text in [*PARSED, *REFUSED]}
    assert verdicts == {**{text: True for text in PARSED}, **{text: False for text in REFUSED}}


@pytest.mark.parametrize("key", ["expire.url", "expire.mimetypes"])
def test_a_bad_value_is_a_config_error_at_its_line(tmp_path, key):
    checked = run_cli("-tt", "-f", _conf(tmp_path, "access plus 1 days 2", key))
    assert checked.returncode != 0
    assert f"expire.conf:3:1: {key}: " in checked.stderr
    assert "missing space after <num>: 2" in checked.stderr
