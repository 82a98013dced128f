"""mod_auth and mod_authn_file in a real worker: Basic against every hash Apache's
htpasswd writes, Digest (MD5, SHA-256, userhash, -sess) against htdigest and plain
files, curl's --basic/--digest/--anyauth, nonces (stale, foreign, replayed), malformed
credentials, REMOTE_USER/AUTH_TYPE for a CGI script, user files read again when they
change, auth.cache, a slow hash off the event loop, and the answer cache never
replaying a protected answer to a request without credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bcrypt", reason="mod_authn_file needs the bcrypt package")
pytest.importorskip("passlib", reason="mod_authn_file needs libpass (passlib)")

from auth_site import (HASH_USERS, HTPASSWD, NONCE_SECRET, REALM, basic, challenges, digest,
                       htpasswd, make_auth_site, needs_apache_utils)
from server_util import WorkerProcess, detached_request, read_until_closed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: serverproc, procutil
from procutil import run_cli  # noqa: E402
from serverproc import wait_until  # noqa: E402
from shared.config.directives import DirectiveValueError
from shared.config.values import Array
from master.configload import load
from worker import authn
from worker.module import COMEBACK, WAIT
from worker.modules import mod_auth
from worker.server import Server

pytestmark = needs_apache_utils
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    conf = make_auth_site(base)
    with WorkerProcess(conf) as worker:
        yield worker.port, base


def ask(port: int, path: str, authorization: str | None = None, method: str = "GET",
        ) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": authorization} if authorization is not None else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def challenge_of(port: int, path: str, algorithm: str = "MD5") -> dict[str, str]:
    status, headers, _ = ask(port, path)
    assert status == 401
    return challenges(headers)[algorithm]


# --------------------------------------------------------------------------- Basic
def test_basic_asks_with_the_realm_as_lighttpd_does(site):
    port, _ = site
    status, headers, body = ask(port, "/basic/f.txt")
    assert status == 401 and b"401 Unauthorized" in body
    assert header(headers, "WWW-Authenticate") == f'Basic realm="{REALM}", charset="UTF-8"'
    assert ask(port, "/f.txt")[0] == 200          # outside every prefix: no login


@pytest.mark.parametrize("user", sorted(HASH_USERS.values()))
def test_basic_takes_each_hash_apache_htpasswd_writes(site, user):
    port, _ = site
    status, _, body = ask(port, "/basic/f.txt", basic(user, "pw-" + user))
    assert (status, body) == (200, b"file of /basic\n")
    status, headers, _ = ask(port, "/basic/f.txt", basic(user, "pw-wrong"))
    assert status == 401 and header(headers, "WWW-Authenticate")


def test_a_wrong_password_ends_keep_alive(site):
    port, _ = site
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /basic/f.txt HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"{basic('apr1', 'nope')}\r\n\r\n".encode())
        answer = read_until_closed(sock)      # closed by the server: no timeout spent
    assert answer.startswith(b"HTTP/1.1 401") and b"Connection: close" in answer


def test_require_user_lets_only_that_user_in(site):
    port, _ = site
    assert ask(port, "/only-amy/f.txt", basic("amy", "pw-amy"))[0] == 200
    assert ask(port, "/only-amy/f.txt", basic("apr1", "pw-apr1"))[0] == 401


def test_plain_and_htdigest_files_answer_basic(site):
    port, _ = site
    assert ask(port, "/plain/f.txt", basic("carol", "pw-carol"))[0] == 200
    assert ask(port, "/plain/f.txt", basic("bob", "pw:with:colons"))[0] == 200
    assert ask(port, "/plain/f.txt", basic("carol", "pw-caro"))[0] == 401
    assert ask(port, "/plain/f.txt", basic("# users", ""))[0] == 401     # a comment line


@pytest.mark.parametrize("credentials, status", [
    ("Basic !!!!", 400),                                   # not base64
    ("Basic " + base64.b64encode(b"no colon").decode(), 400),
    ("Basic ", 401),                                       # no credentials (lighttpd)
    ("Basic ====", 400),                                   # nothing decodes
    ("Basic " + "QUFB" * 400, 401),                        # past 1023 bytes: not read
    ("Basic", 401), ("Bearer abc", 401), ("", 401),
    ("basic " + base64.b64encode(b"sha1:pw-sha1").decode(), 200),   # scheme: any case
    ("Basic " + base64.b64encode(b"sha1:pw-sha1").decode().rstrip("="), 200),
])
def test_malformed_basic_credentials(site, credentials, status):
    port, _ = site
    assert ask(port, "/basic/f.txt", credentials)[0] == status


def test_remote_user_and_auth_type_reach_a_cgi_script(site):
    port, _ = site
    status, _, body = ask(port, "/cgi/env.sh", basic("sha1", "pw-sha1"))
    assert (status, body) == (200, b"REMOTE_USER=sha1\nAUTH_TYPE=Basic\n")


def test_extern_wants_a_remote_user_from_elsewhere(site):
    status, headers, _ = ask(site[0], "/extern/f.txt", basic("sha1", "pw-sha1"))
    assert status == 401 and header(headers, "WWW-Authenticate") is None


def test_digest_with_a_backend_that_has_no_digests_is_a_server_error(site):
    assert ask(site[0], "/digest-htpasswd/f.txt")[0] == 500


# -------------------------------------------------------------------------- Digest
def test_digest_challenge_per_algorithm_strongest_first(site):
    port, _ = site
    status, headers, _ = ask(port, "/both/f.txt")
    offered = [v for k, v in headers if k.lower() == "www-authenticate"]
    assert status == 401 and len(offered) == 3
    assert offered[0].startswith(f'Digest realm="{REALM}", charset="UTF-8", '
                                 'algorithm=SHA-512-256, nonce="')
    assert offered[1].startswith(f'Digest realm="{REALM}", charset="UTF-8", algorithm=SHA-256, ')
    assert offered[2].startswith(f'Digest realm="{REALM}", charset="UTF-8", algorithm=MD5, ')
    assert all(v.endswith('", qop="auth"') for v in offered)
    assert challenges(headers)["MD5"]["nonce"] != challenges(headers)["SHA-256"]["nonce"]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "SHA-512-256", "MD5-sess",
                                       "SHA-256-sess"])
def test_digest_login_in_each_algorithm(site, algorithm):
    port, _ = site
    challenge = challenge_of(port, "/both/f.txt", algorithm.removesuffix("-sess"))
    good = digest(challenge, "carol", "pw-carol", "/both/f.txt", algorithm=algorithm)
    assert ask(port, "/both/f.txt", good)[:3:2] == (200, b"file of /both\n")
    bad = digest(challenge, "carol", "pw-wrong", "/both/f.txt", algorithm=algorithm, nc=2)
    assert ask(port, "/both/f.txt", bad)[0] == 401


def test_digest_from_an_apache_htdigest_file(site):
    port, _ = site
    challenge = challenge_of(port, "/digest/f.txt")
    good = digest(challenge, "dave", "pw-dave", "/digest/f.txt")
    assert ask(port, "/digest/f.txt", good)[0] == 200
    assert ask(port, "/digest/f.txt", digest(challenge, "dave", "x", "/digest/f.txt",
                                             nc=5))[0] == 401


def test_digest_sha256_with_userhash(site):
    port, _ = site
    status, headers, _ = ask(port, "/digest256/f.txt")
    offered = [v for k, v in headers if k.lower() == "www-authenticate"]
    assert len(offered) == 1 and offered[0].endswith('qop="auth", userhash=true')
    challenge = challenges(headers)["SHA-256"]
    good = digest(challenge, "erin", "pw-erin", "/digest256/f.txt", userhash=True)
    assert ask(port, "/digest256/f.txt", good)[0] == 200
    md5 = digest(challenge, "erin", "pw-erin", "/digest256/f.txt", algorithm="MD5", nc=2)
    assert ask(port, "/digest256/f.txt", md5)[0] == 401    # not an algorithm offered


def test_require_user_with_digest(site):
    port, _ = site
    challenge = challenge_of(port, "/both/f.txt")
    assert ask(port, "/both/f.txt", digest(challenge, "bob", "pw:with:colons",
                                           "/both/f.txt"))[0] == 401


def test_a_replayed_digest_is_refused_as_stale(site):
    port, _ = site
    challenge = challenge_of(port, "/both/f.txt")
    first = digest(challenge, "carol", "pw-carol", "/both/f.txt", nc=1)
    assert ask(port, "/both/f.txt", first)[0] == 200
    status, headers, _ = ask(port, "/both/f.txt", first)        # the very same again
    assert status == 401 and challenges(headers)["MD5"]["stale"] == "true"
    assert list(challenges(headers)) == ["MD5"]                   # the client's only
    later = digest(challenge, "carol", "pw-carol", "/both/f.txt", nc=2)
    assert ask(port, "/both/f.txt", later)[0] == 200              # nc goes up: fine


def _secret_nonce(made: int, algorithm: str = "MD5") -> str:
    stamp = f"{made:x}:0000abcd"
    mac = hmac.new(NONCE_SECRET.encode(), stamp.encode(),
                   {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]).hexdigest()
    return f"{stamp}:{mac}"


def test_an_old_nonce_is_stale_and_a_foreign_one_refused(site):
    port, _ = site
    challenge = {"realm": REALM, "nonce": _secret_nonce(int(time.time()) - 601)}
    status, headers, _ = ask(port, "/secret/f.txt", digest(challenge, "carol", "pw-carol",
                                                           "/secret/f.txt"))
    assert status == 401 and challenges(headers)["MD5"]["stale"] == "true"
    challenge["nonce"] = _secret_nonce(int(time.time()) - 5)
    assert ask(port, "/secret/f.txt", digest(challenge, "carol", "pw-carol",
                                             "/secret/f.txt"))[0] == 200
    challenge["nonce"] = f"{int(time.time()):x}:00000000:{'0' * 32}"   # not made here
    status, headers, _ = ask(port, "/secret/f.txt", digest(challenge, "carol", "pw-carol",
                                                           "/secret/f.txt"))
    assert status == 401 and "stale" not in challenges(headers)["MD5"]
    challenge["nonce"] = "1:2:3"            # its time is looked at first, as in lighttpd
    status, headers, _ = ask(port, "/secret/f.txt", digest(challenge, "carol", "pw-carol",
                                                           "/secret/f.txt"))
    assert status == 401 and challenges(headers)["MD5"]["stale"] == "true"


def test_a_nonce_near_its_end_brings_the_next_one(site):
    port, _ = site
    challenge = {"realm": REALM, "nonce": _secret_nonce(int(time.time()) - 550)}
    status, headers, _ = ask(port, "/secret/f.txt", digest(challenge, "carol", "pw-carol",
                                                           "/secret/f.txt"))
    assert status == 200 and header(headers, "Authentication-Info").startswith('nextnonce="')


@pytest.mark.parametrize("change, status", [
    ({"uri": "/digest/other.txt"}, 400),          # not this request's target
    ({"response": None}, 400),                    # a field missing
    ({"cnonce": None}, 400),                      # qop without cnonce
    ({"qop": "auth-int"}, 400),
    ({"response": "zz"}, 400),                    # not a digest
    ({"realm": "elsewhere"}, 401),
    ({"algorithm": "SHA-512"}, 401),
    ({"username*": "UTF-8''dave"}, 400),          # both username and username*
])
def test_malformed_digest_credentials(site, change, status):
    port, _ = site
    challenge = challenge_of(port, "/digest/f.txt")
    credentials = digest(challenge, "dave", "pw-dave", "/digest/f.txt", override=change)
    assert ask(port, "/digest/f.txt", credentials)[0] == status


def test_huge_digest_credentials_are_a_bad_request(site):
    port, _ = site
    challenge = challenge_of(port, "/digest/f.txt")
    credentials = digest(challenge, "dave", "pw-dave", "/digest/f.txt", cnonce="c" * 9000)
    assert ask(port, "/digest/f.txt", credentials)[0] == 400


def test_username_star_names_the_user(site):
    port, _ = site
    challenge = challenge_of(port, "/digest/f.txt")
    credentials = digest(challenge, "dave", "pw-dave", "/digest/f.txt",
                         override={"username": None, "username*": "UTF-8''%64ave"})
    assert ask(port, "/digest/f.txt", credentials)[0] == 200


# ----------------------------------------------------------------------------- curl
@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("how, path, user", [
    ("--basic", "/basic/f.txt", "bcrypt"), ("--digest", "/digest/f.txt", "dave"),
    ("--anyauth", "/basic/f.txt", "sha512crypt"), ("--anyauth", "/digest/f.txt", "dave"),
])
def test_curl_logs_in(site, how, path, user):
    port, _ = site
    done = subprocess.run([CURL, "-s", "-o", "-", "-w", "%{http_code}", how, "-u",
                           f"{user}:pw-{user}", f"http://127.0.0.1:{port}{path}"],
                          capture_output=True, text=True, timeout=20)
    assert done.stdout.endswith("200") and "file of" in done.stdout


# ------------------------------------------------------------ files, cache, threads
def test_a_changed_user_file_is_read_again(site):
    port, base = site
    assert ask(port, "/plain/f.txt", basic("newcomer", "pw-new"))[0] == 401
    with open(base / "plain", "a") as file:
        file.write("newcomer:pw-new\n")
    wait_until(lambda: ask(port, "/plain/f.txt", basic("newcomer", "pw-new"))[0] == 200)


def test_auth_cache_keeps_a_login_the_file_no_longer_has(site):
    port, base = site
    assert ask(port, "/cached/f.txt", basic("kept", "pw-kept"))[0] == 200
    cached_file = base / "htpasswd-cached"
    cached_file.unlink()
    htpasswd(cached_file, "-m", "other", "pw-other")      # "kept" is gone from the file
    wait_until(lambda: ask(port, "/cached/f.txt", basic("other", "pw-other"))[0] == 200)
    assert ask(port, "/cached/f.txt", basic("kept", "pw-kept"))[0] == 200     # the cache
    assert ask(port, "/cached/f.txt", basic("kept", "pw-wrong"))[0] == 401
    # a login is kept by its Authorization field as sent: the same credentials spelt
    # otherwise are checked against the file again
    respelt = "basic " + basic("kept", "pw-kept").split(" ", 1)[1]
    assert ask(port, "/cached/f.txt", respelt)[0] == 401


def test_auth_cache_keeps_one_authorization_field_a_user(site):
    """The fields that pass for one login (here the scheme's case) replace each other
    in auth.cache, so that a user cannot pile them up in the worker's memory."""
    port, base = site
    cached_file = base / "htpasswd-cached"
    htpasswd(cached_file, "-B", "twice", "pw-twice")
    canonical = basic("twice", "pw-twice")
    lowercase = "basic " + canonical.split(" ", 1)[1]
    wait_until(lambda: ask(port, "/cached/f.txt", canonical)[0] == 200)
    assert ask(port, "/cached/f.txt", lowercase)[0] == 200      # kept in its place
    subprocess.run([HTPASSWD, "-D", str(cached_file), "twice"], check=True,
                   capture_output=True, timeout=30)
    htpasswd(cached_file, "-B", "marker", "pw-marker")          # the file read again
    wait_until(lambda: ask(port, "/cached/f.txt", basic("marker", "pw-marker"))[0] == 200)
    assert ask(port, "/cached/f.txt", lowercase)[0] == 200
    assert ask(port, "/cached/f.txt", canonical)[0] == 401


def test_a_slow_hash_does_not_hold_other_requests(site):
    port, _ = site
    with socket.create_connection(("127.0.0.1", port), timeout=20) as slow:
        slow.sendall(f"GET /basic/f.txt HTTP/1.0\r\nAuthorization: "
                     f"{basic('slow', 'pw-slow')}\r\n\r\n".encode())
        wait_until(lambda: ask(port, "/f.txt")[0] == 200)
        still_hashing = not select.select([slow], [], [], 0)[0]
        answer = read_until_closed(slow)
    assert answer.startswith(b"HTTP/1.0 200")
    assert still_hashing, "the public file waited for the bcrypt hash (cost 12)"


def test_the_answer_cache_never_replays_a_protected_answer(site):
    port, _ = site
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    try:
        for credentials in (basic("sha1", "pw-sha1"), basic("sha1", "pw-sha1"), None, None):
            connection.request("GET", "/basic/f.txt", headers={"Authorization": credentials}
                               if credentials else {})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    assert statuses == [200, 200, 401, 401]


# --------------------------------------------------------------------------- config
def _require(**fields: str) -> Array:
    return Array([("/p", Array(list(fields.items())))])


@pytest.mark.parametrize("fields, message", [
    ({"realm": "r", "require": "valid-user"}, "the method field is missing"),
    ({"method": "ntlm", "realm": "r", "require": "valid-user"}, "unknown method ntlm"),
    ({"method": "basic", "require": "valid-user"}, "the realm field is missing"),
    ({"method": "basic", "realm": "r"}, "the require field is missing"),
    ({"method": "basic", "realm": "r", "require": "usr=a"}, "invalid/unsupported token"),
    ({"method": "basic", "realm": "r", "require": "user"}, "missing '='"),
    ({"method": "basic", "realm": "r", "require": "user="}, "missing token after '='"),
    ({"method": "basic", "realm": "r", "require": "user=a|valid-user=x"},
     "valid user can not be combined"),
    ({"method": "digest", "realm": "r", "require": "valid-user", "algorithm": "SHA-1"},
     "invalid algorithm"),
    ({"method": "basic", "realm": "r", "require": "valid-user", "colour": "red"},
     "the field is unknown"),
    ({"method": " basic", "realm": "r", "require": "valid-user"}, "unknown method  basic"),
    ({"method": "digest", "realm": "r", "require": "valid-user", "algorithm": " "},
     "invalid algorithm"),
])
def test_auth_require_is_checked_as_lighttpd_checks_it(fields, message):
    with pytest.raises(DirectiveValueError, match=message):
        mod_auth.parse_require(_require(**fields))


@pytest.mark.parametrize("word, on", [("enable", True), ("TRUE", True), ("1", True),
                                      ("disable", False), ("", False), ("yes", False)])
def test_userhash_is_on_for_lighttpds_words_only_and_off_otherwise(word, on):
    rules = mod_auth.parse_require(_require(method="digest", realm="r",
                                            require="valid-user", userhash=word))
    assert rules[0].userhash is on


def test_the_first_matching_prefix_decides():
    rules = mod_auth.parse_require(Array([
        ("/a", Array([("method", "basic"), ("realm", "one"), ("require", "valid-user")])),
        ("/a/b", Array([("method", "basic"), ("realm", "two"), ("require", "user=x|")])),
    ]))
    assert mod_auth.matching_rule(rules, "/a/b/c", False).realm == "one"
    assert mod_auth.matching_rule(rules, "/A/b", True).realm == "one"
    assert mod_auth.matching_rule(rules, "/A/b", False) is None
    assert rules[1].users == frozenset({"x"}) and not rules[1].valid_user


def test_an_unknown_backend_is_refused_at_start(tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_auth", '
                    f'"mod_authn_file")\nauth.backend = "kerberos"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode != 0 and "auth.backend not supported: kerberos" in checked.stderr


def test_auth_debug_is_an_unknown_key_as_in_lighttpd_1_4_69(tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_auth")\n'
                    f'auth.debug = 1\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode == 0
    assert "WARNING: unknown config-key: auth.debug (ignored)" in checked.stderr


def test_replayed_nonce_table_stays_bounded():
    counts = mod_auth.NonceCounts()
    for number in range(mod_auth.MAX_NONCES + 10):
        assert counts.fresh(f"n{number}", 1, 0)
    assert len(counts.seen) <= mod_auth.MAX_NONCES
    counts.sweep(mod_auth.NONCE_LIFETIME + 1)
    assert not counts.seen


def _request(rules, extern_authn: bool, remote_user: str | None, backend: str = "",
             **connection: object):
    """A request for /p/x under `rules`, for what no module here can drive: a
    REMOTE_USER set before mod_auth runs (by a TLS client certificate, say)."""
    request = detached_request({"auth.require": rules, "auth.extern-authn": extern_authn,
                                "auth.cache": None, "server.force-lowercase-filenames": False,
                                "auth.backend": backend}, **connection)
    request.uri_path = "/p/x"
    if remote_user:
        request.set_env("REMOTE_USER", remote_user)
    return request


@pytest.mark.parametrize("method, extern_authn, remote_user, result", [
    ("extern", False, "amy", None), ("extern", False, "bob", 401),
    ("extern", False, None, 401),
    ("basic", True, "amy", None),                    # taken in place of a login
])
def test_extern_and_extern_authn_take_a_remote_user_set_before(method, extern_authn,
                                                               remote_user, result):
    rules = mod_auth.parse_require(_require(method=method, realm="r", require="user=amy"))
    request = _request(rules, extern_authn, remote_user)
    assert mod_auth.Module(None).handle_uri_clean(request) == result


def test_the_access_log_names_the_user(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f.txt").write_text("x\n")
    (tmp_path / "users").write_text("amy:pw-amy\n")
    log = tmp_path / "access.log"
    conf = tmp_path / "log.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_auth", "mod_authn_file", "mod_accesslog")\n'
                    f'accesslog.filename = "{log}"\naccesslog.format = "%u %s %U"\n'
                    f'auth.backend = "plain"\nauth.backend.plain.userfile = "{tmp_path}/users"\n'
                    'auth.require = ("/p/" => ("method" => "basic", "realm" => "r", '
                    '"require" => "valid-user"))\n')
    with WorkerProcess(conf) as worker:
        assert ask(worker.port, "/p/f.txt", basic("amy", "pw-amy"))[0] == 200
        assert ask(worker.port, "/p/f.txt")[0] == 401
    assert log.read_text().splitlines() == ["amy 200 /p/f.txt", "- 401 /p/f.txt"]


def test_an_error_handler_page_keeps_the_challenge(tmp_path):
    """lighttpd keeps WWW-Authenticate on a 401 answered by server.error-handler."""
    (tmp_path / "p").mkdir()
    (tmp_path / "err.txt").write_text("custom error\n")
    (tmp_path / "users").write_text("amy:pw-amy\n")
    conf = tmp_path / "eh.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_auth", "mod_authn_file")\n'
                    'server.error-handler = "/err.txt"\nmimetype.assign = (".txt" => "text/plain")\n'
                    f'auth.backend = "plain"\nauth.backend.plain.userfile = "{tmp_path}/users"\n'
                    'auth.require = ("/p/" => ("method" => "basic", "realm" => "r", '
                    '"require" => "valid-user"))\n')
    with WorkerProcess(conf) as worker:
        status, headers, body = ask(worker.port, "/p/f.txt")
    assert (status, body) == (401, b"custom error\n")
    assert header(headers, "WWW-Authenticate") == 'Basic realm="r", charset="UTF-8"'


class _SlowBackend:
    """A backend whose every answer comes later; counts the questions."""

    def __init__(self) -> None:
        self.asked: list[authn.Pending] = []

    def check_password(self, request, realm, user, password):
        pending = authn.Pending(request)
        self.asked.append(pending)
        return pending

    def answers_digest(self) -> bool:
        return False


def _held_request(rules, credentials: str):
    """A login that mod_auth holds while the slow backend checks it."""
    request = _request(rules, False, None, "slow-for-test", wake=lambda _request: None)
    request.headers["authorization"] = credentials
    return request


def test_logins_asked_at_once_share_one_slow_check():
    backend = _SlowBackend()
    authn.register("slow-for-test", backend)
    rules = mod_auth.parse_require(_require(method="basic", realm="r", require="valid-user"))
    module = mod_auth.Module(None)
    same = [_held_request(rules, basic("amy", "pw")) for _ in range(3)]
    other = _held_request(rules, basic("amy", "other password"))
    assert [module.handle_uri_clean(r) for r in (*same, other)] == [WAIT] * 4
    assert len(backend.asked) == 2                 # one check per distinct password
    backend.asked[0].settle(True)
    assert [r.woken for r in same] == [True] * 3 and not other.woken
    for request in same:
        assert module.handle_subrequest(request) == COMEBACK
        assert module.handle_uri_clean(request) is None
        assert request.env == {"REMOTE_USER": "amy", "AUTH_TYPE": "Basic"}


def test_host_in_require_is_warned_of_as_lighttpd_does(tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_auth")\n'
                    'auth.require = ("/p" => ("method" => "basic", "realm" => "r", '
                    '"require" => "host=a|user=u"))\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode == 0
    assert checked.stderr.splitlines() == [
        f"{conf}:3:1: WARNING: warning parsing auth.require 'require' field: 'host' not "
        "implemented; field value: host=a|user=u"]


def _kept_after_two_gets(tmp_path, cache: str, method: str = "basic") -> int:
    """How many answers the worker's answer cache holds after the same authorized GET
    twice on one connection."""
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "f.txt").write_text("protected\n")
    (tmp_path / "users").write_text("amy:pw-amy\n")
    conf = tmp_path / "replay.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_auth", "mod_authn_file", "mod_staticfile")\n'
                    f'auth.backend = "plain"\nauth.backend.plain.userfile = "{tmp_path}/users"\n'
                    f'{cache}auth.require = ("/p/" => ("method" => "{method}", '
                    '"realm" => "r", "require" => "valid-user"))\n')
    server = Server(load(str(conf)), [])
    client, end = socket.socketpair()
    connection = server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    try:
        for count in (1, 2):
            client.sendall(b"GET /p/f.txt HTTP/1.1\r\nHost: t\r\n"
                           b"Authorization: Basic YW15OnB3LWFteQ==\r\n\r\n")
            deadline = time.monotonic() + 5
            while connection.requests_done < count or connection.out.chunks:
                assert time.monotonic() < deadline
                server.loop.run_once(0.01)
            assert client.recv(65536).endswith(b"protected\n")
        return len(server.pipeline.answers.entries)
    finally:
        server.close_all()


def test_basic_logins_kept_by_auth_cache_let_the_answer_be_replayed(tmp_path):
    assert _kept_after_two_gets(tmp_path, 'auth.cache = ("max-age" => "600")\n') == 1
    assert _kept_after_two_gets(tmp_path, "") == 0        # every login checked
