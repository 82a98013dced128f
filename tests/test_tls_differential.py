"""mod_openssl beside lighttpd 1.4.69's on one config and the same certificates: the
certificate SNI chooses, client certificates verified (enforced or not), and the
SSL_* variables a CGI script sees."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procutil import REPO
from test_tls import CGI_ENV, make_certificate, served_name

sys.path.insert(0, str(REPO / "tests" / "worker"))

from test_differential import beside_lighttpd  # noqa: E402

pytestmark = pytest.mark.skipif(
    not shutil.which("openssl") or not shutil.which("curl")
    or not Path("/usr/lib/lighttpd/mod_openssl.so").exists(),
    reason="needs openssl, curl and lighttpd's mod_openssl (lighttpd-mod-openssl)")

# what differs by nature between two servers and two handshakes, and pylighttpd's
# additions (the issuer's DN, as Apache's mod_ssl exports it)
UNCOMPARED = ("SERVER_SOFTWARE", "REMOTE_PORT", "SERVER_PORT", "SSL_CLIENT_CERT",
              "SSL_CLIENT_I_DN", "SSL_CLIENT_I_DN_CN")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("tlsdiff")
    for name in ("a.example", "b.example", "strict.example"):
        crt, key = make_certificate(base, name)
        (base / f"{name}.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    ca = make_certificate(base, "Diff CA")
    make_certificate(base, "alice", issuer=ca)
    make_certificate(base, "mallory")                 # signed by no CA the server knows
    docroot = base / "www"
    docroot.mkdir()
    script = docroot / "env.sh"
    script.write_text(CGI_ENV.replace("HTTPS|", "HTTPS|SERVER_NAME|"))
    script.chmod(0o755)
    conf = base / "common.conf"
    conf.write_text(f"""
server.document-root = "{docroot}"
server.modules = ("mod_openssl", "mod_cgi", "mod_staticfile")
cgi.assign = (".sh" => "")
ssl.engine = "enable"
ssl.pemfile = "{base}/a.example.pem"
ssl.ca-file = "{base}/Diff CA.crt"
ssl.verifyclient.activate = "enable"
ssl.verifyclient.enforce = "disable"
ssl.verifyclient.username = "SSL_CLIENT_S_DN_CN"
$HTTP["host"] == "b.example" {{ ssl.pemfile = "{base}/b.example.pem" }}
$HTTP["host"] == "strict.example" {{
    ssl.pemfile = "{base}/strict.example.pem"
    ssl.verifyclient.enforce = "enable"
}}
""")
    with beside_lighttpd(conf) as (theirs, ours):
        yield theirs, ours, base


def cgi_env(port: int, host: str, base: Path, client: str | None) -> dict[str, str] | None:
    """The SSL_* environment of the CGI over TLS, None when the handshake failed."""
    cert = ["--cert", str(base / f"{client}.crt"), "--key", str(base / f"{client}.key")] \
        if client else []
    done = subprocess.run(["curl", "-sk", "--max-time", "10", "--tlsv1.3", *cert,
                           "--resolve", f"{host}:{port}:127.0.0.1",
                           f"https://{host}:{port}/env.sh"],
                          capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return None
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if env.get("SSL_CLIENT_VERIFY", "").startswith("FAILED:"):
        # lighttpd words the reason as an undecoded OpenSSL error code
        # ("error:00000012:lib(0)::reason(18)"), pylighttpd as OpenSSL's verify text
        env["SSL_CLIENT_VERIFY"] = "FAILED:"
    return {key: value for key, value in env.items() if key not in UNCOMPARED}


def test_sni_chooses_the_same_certificate(servers):
    theirs, ours, _ = servers
    for name in ("a.example", "b.example", "strict.example", "unknown.example"):
        assert served_name(ours, name) == served_name(theirs, name), name


@pytest.mark.parametrize("client", [None, "alice", "mallory"])
def test_a_cgi_sees_the_same_ssl_variables_when_verification_is_not_enforced(servers,
                                                                             client):
    theirs, ours, base = servers
    ours_env = cgi_env(ours, "a.example", base, client)
    assert ours_env is not None and ours_env == cgi_env(theirs, "a.example", base, client)


@pytest.mark.parametrize("client", [None, "alice", "mallory"])
def test_enforced_verification_admits_the_same_clients(servers, client):
    theirs, ours, base = servers
    assert cgi_env(ours, "strict.example", base, client) == \
        cgi_env(theirs, "strict.example", base, client)


# ------------------------------------------------------------ suites and groups
# cipher settings -> the client offers whose outcome (protocol and suite) must agree
SUITE_CONFIGS = {
    "conf-cmd-cipherstring": 'ssl.openssl.ssl-conf-cmd = ("CipherString" => "HIGH:!aNULL:!MD5",'
                             ' "Curves" => "X25519:P-256:P-384:P-521")',
    "cipher-list": 'ssl.cipher-list = "HIGH"\n'
                   'ssl.openssl.ssl-conf-cmd = ("Groups" => "X25519")',
    "server-preference": 'ssl.openssl.ssl-conf-cmd = ("CipherString" => "ECDHE+AESGCM:ECDHE+'
                         'CHACHA20", "Options" => "ServerPreference", "Groups" => "X25519")',
    "more-commands": 'ssl.openssl.ssl-conf-cmd = ("CipherString" => "HIGH", '
                     '"DHParameters" => "{base}/dh.pem", '
                     '"SecurityLevel" => "1", "ECDHParameters" => "secp384r1", '
                     '"SignatureAlgorithms" => "RSA-PSS+SHA256:RSA+SHA256", '
                     '"Options" => "+ServerPreference, Bugs, -SessionTicket")',
}
CLIENT_OFFERS = {
    "chacha-first": ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:"
                     "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"],
    "cbc-first": ["-tls1_2", "-cipher", "AES128-SHA:ECDHE-RSA-AES128-SHA:"
                  "ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0"],
    "tls13-chacha-first": ["-tls1_3", "-ciphersuites",
                           "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"],
    "no-common-group": ["-tls1_2", "-groups", "P-384"],      # DHE, or RSA key exchange
    "dhe-only": ["-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-SHA"],
    "pss-only": ["-tls1_2", "-sigalgs", "RSA-PSS+SHA256"],
    "pkcs1-sha512-only": ["-tls1_2", "-sigalgs", "RSA+SHA512"],
}


def negotiated(port: int, offer: list[str]) -> tuple[str, str] | None:
    """(protocol, suite) of a handshake offering `offer`, None when it failed."""
    done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "a.example", "-brief", *offer],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=20)
    facts = dict(line.split(":", 1) for line in (done.stdout + done.stderr).splitlines()
                 if ":" in line)
    if "Protocol version" not in facts:
        return None
    return facts["Protocol version"].strip(), facts["Ciphersuite"].strip()


@pytest.fixture(scope="module", params=list(SUITE_CONFIGS))
def suite_servers(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("suites")
    crt, key = make_certificate(base, "a.example")
    (base / "a.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                    "group:ffdhe3072", "-out", str(base / "dh.pem")],
                   check=True, capture_output=True, timeout=30)
    conf = base / "suites.conf"
    conf.write_text(f'server.document-root = "{base}"\nserver.modules = ("mod_openssl")\n'
                    f'ssl.engine = "enable"\nssl.pemfile = "{base}/a.pem"\n'
                    f"{SUITE_CONFIGS[request.param].format(base=base)}\n")
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("offer", list(CLIENT_OFFERS))
def test_the_same_suite_is_chosen(suite_servers, offer):
    """Whose order counts (the client's, unless a cipher list or ServerPreference asks
    for the server's; a client putting ChaCha20 first keeps it then), and DHE over
    ffdhe2048 when no curve is shared (or no handshake, with ECDHE suites only)."""
    theirs, ours = suite_servers
    assert negotiated(ours, CLIENT_OFFERS[offer]) == negotiated(theirs, CLIENT_OFFERS[offer])
