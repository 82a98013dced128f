"""`+=` repeating an array key: lighttpd 1.4.69 accepts the same value again with a
warning (Debian's lighttpd.conf plus an enabled snippet that is included twice) and
refuses another value; so does pylighttpd, checked beside lighttpd itself."""

from __future__ import annotations

import pytest

from procutil import run_cli, run_lighttpd

SAME = ('alias.url += ( "/javascript" => "/usr/share/javascript" )\n'
        'alias.url += ( "/javascript" => "/usr/share/javascript" )\n')
OTHER = ('alias.url += ( "/javascript" => "/usr/share/javascript" )\n'
         'alias.url += ( "/javascript" => "/elsewhere" )\n')


def _config(tmp_path, body: str):
    conf = tmp_path / "merge.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_alias")\n'
                    + body)
    return conf


@pytest.mark.parametrize("body, accepted", [(SAME, True), (OTHER, False)])
def test_a_repeated_key_is_judged_as_lighttpd_judges_it(tmp_path, body, accepted):
    conf = _config(tmp_path, body)
    ours = run_cli("-tt", "-f", str(conf))
    theirs = run_lighttpd("-tt", "-f", str(conf))
    assert (ours.returncode == 0, theirs.returncode == 0) == (accepted, accepted)
    assert "Duplicate array-key '/javascript'" in theirs.stderr + theirs.stdout
    said = ours.stderr + ours.stdout
    assert ("Duplicate array-key '/javascript'" in said) if accepted else \
        'duplicate array key "/javascript"' in said
