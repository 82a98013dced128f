"""A site protected by mod_auth, its user files written by Apache's own htpasswd and
htdigest (Debian apache2-utils), and a Digest client, for pylighttpd's mod_auth tests
and for running lighttpd 1.4.69 beside it with the very same config.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HTPASSWD = shutil.which("htpasswd")
HTDIGEST = shutil.which("htdigest")
needs_apache_utils = pytest.mark.skipif(
    not (HTPASSWD and HTDIGEST),
    reason="Apache's htpasswd/htdigest are not installed (apt-get install apache2-utils)")

# htpasswd option -> user of that hash (their password is "pw-" + user)
HASH_USERS = {"-B": "bcrypt", "-m": "apr1", "-s": "sha1", "-2": "sha256crypt",
              "-5": "sha512crypt", "-d": "des"}
REALM = "Wonderland"

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_auth", "mod_authn_file", "mod_cgi", "mod_staticfile")
server.tag = "authtest"
server.max-request-field-size = 65536
mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")
cgi.assign = (".sh" => "")
auth.backend = "htpasswd"
auth.backend.htpasswd.userfile = "{base}/htpasswd"
auth.backend.plain.userfile = "{base}/plain"
auth.backend.htdigest.userfile = "{base}/htdigest"
auth.require = (
  "/basic/" => ("method" => "basic", "realm" => "{realm}", "require" => "valid-user"),
  "/only-amy/" => ("method" => "basic", "realm" => "{realm}", "require" => "user=amy|group=g"),
  "/plain/" => ("method" => "basic", "realm" => "{realm}", "require" => "valid-user"),
  "/digest/" => ("method" => "digest", "realm" => "{realm}", "require" => "valid-user"),
  "/digest256/" => ("method" => "digest", "realm" => "{realm}", "require" => "valid-user",
                    "algorithm" => "SHA-256", "userhash" => "enable"),
  "/both/" => ("method" => "digest", "realm" => "{realm}", "require" => "user=carol",
               "algorithm" => "MD5|SHA-256|SHA-512-256"),
  "/secret/" => ("method" => "digest", "realm" => "{realm}", "require" => "valid-user",
                 "nonce_secret" => "{secret}"),
  "/cached/" => ("method" => "basic", "realm" => "{realm}", "require" => "valid-user"),
  "/cgi/" => ("method" => "basic", "realm" => "{realm}", "require" => "valid-user"),
  "/extern/" => ("method" => "extern", "realm" => "{realm}", "require" => "valid-user"),
  "/digest-htpasswd/" => ("method" => "digest", "realm" => "{realm}",
                          "require" => "valid-user"),
  "/zoe/" => ("method" => "basic", "realm" => "Zoë's €", "require" => "valid-user"),
  "/zoe-digest/" => ("method" => "digest", "realm" => "Zoë", "require" => "valid-user"),
)
$HTTP["url"] =^ "/plain/" {{ auth.backend = "plain" }}
$HTTP["url"] =^ "/digest/" {{ auth.backend = "htdigest" }}
$HTTP["url"] =^ "/digest256/" {{ auth.backend = "htdigest" }}
$HTTP["url"] =^ "/both/" {{ auth.backend = "plain" }}
$HTTP["url"] =^ "/secret/" {{ auth.backend = "plain" }}
$HTTP["url"] =^ "/cached/" {{
    auth.cache = ("max-age" => "600")
    auth.backend.htpasswd.userfile = "{base}/htpasswd-cached"
}}
"""
NONCE_SECRET = "not so secret"
ENV_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'REMOTE_USER=%s\\nAUTH_TYPE=%s\\n' "$REMOTE_USER" "$AUTH_TYPE"
"""


def htpasswd(path: Path, option: str, user: str, password: str) -> None:
    """Apache's htpasswd adds (or creates) the line of `user` in `option`'s hash."""
    create = [] if path.exists() else ["-c"]
    cost = ["-C", "4"] if option == "-B" else []
    subprocess.run([HTPASSWD, *create, "-b", option, *cost, str(path), user, password],
                   check=True, capture_output=True, timeout=30)


def htdigest(path: Path, realm: str, user: str, password: str) -> None:
    """Apache's htdigest (it reads the password twice from the terminal or stdin)."""
    create = [] if path.exists() else ["-c"]
    subprocess.run([HTDIGEST, *create, str(path), realm, user],
                   input=f"{password}\n{password}\n", text=True, check=True,
                   capture_output=True, timeout=30)


def sha256_htdigest_line(user: str, realm: str, password: str) -> str:
    """An htdigest line in SHA-256 with lighttpd's userhash field (htdigest writes MD5
    only; lighttpd documents this form for SHA-256 and userhash)."""
    ha1 = hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()
    userhash = hashlib.sha256(f"{user}:{realm}".encode()).hexdigest()
    return f"{user}:{realm}:{ha1}:{userhash}\n"


def make_auth_site(base: Path) -> Path:
    """The docroot (a file in each protected directory, an env script under /cgi/) and
    the user files beside it; returns the config file."""
    docroot = base / "www"
    for name in ("", "basic", "only-amy", "plain", "digest", "digest256", "both", "secret",
                 "cached", "cgi", "extern", "digest-htpasswd"):
        (docroot / name).mkdir(parents=True, exist_ok=True)
        (docroot / name / "f.txt").write_text(f"file of /{name}\n")
    script = docroot / "cgi" / "env.sh"
    script.write_text(ENV_SCRIPT)
    script.chmod(0o755)
    for option, user in HASH_USERS.items():
        htpasswd(base / "htpasswd", option, user, "pw-" + user)
    htpasswd(base / "htpasswd", "-m", "amy", "pw-amy")
    htpasswd(base / "htpasswd", "-p", "plaintext", "pw-plaintext")   # no hash: never good
    subprocess.run([HTPASSWD, "-b", "-B", "-C", "12", str(base / "htpasswd"), "slow",
                    "pw-slow"], check=True, capture_output=True, timeout=60)
    htpasswd(base / "htpasswd-cached", "-B", "kept", "pw-kept")
    (base / "plain").write_text("# users\ncarol:pw-carol\nbob:pw:with:colons\n")
    htdigest(base / "htdigest", REALM, "dave", "pw-dave")
    with open(base / "htdigest", "a") as file:
        file.write(sha256_htdigest_line("erin", REALM, "pw-erin"))
    conf = base / "auth.conf"
    conf.write_text(CONFIG.format(docroot=docroot, base=base, realm=REALM,
                                  secret=NONCE_SECRET))
    return conf


# ---------------------------------------------------------------------- clients
def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def challenges(headers: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """algorithm -> the fields of each Digest WWW-Authenticate of an answer."""
    found = {}
    for name, value in headers:
        if name.lower() == "www-authenticate" and value.startswith("Digest "):
            fields = {key: quoted or bare for key, quoted, bare in _FIELD.findall(value[7:])}
            found[fields.get("algorithm", "MD5")] = fields
    return found


def digest(challenge: dict[str, str], user: str, password: str, uri: str,
           method: str = "GET", nc: int = 1, cnonce: str = "0a4f113b",
           algorithm: str | None = None, userhash: bool = False,
           override: dict[str, str | None] | None = None) -> str:
    """The Authorization a Digest client sends for `challenge` (RFC 7616 §3.4); the
    fields in `override` are sent instead (None: left out)."""
    algorithm = algorithm or challenge.get("algorithm", "MD5")
    name = {"MD5": "md5", "SHA-256": "sha256",
            "SHA-512-256": "sha512_256"}[algorithm.removesuffix("-sess")]

    def hash_(data: bytes):
        return hashlib.new(name, data)
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = hash_(f"{user}:{realm}:{password}".encode()).hexdigest()
    if algorithm.endswith("-sess"):
        ha1 = hash_(f"{ha1}:{nonce}:{cnonce}".encode()).hexdigest()
    ha2 = hash_(f"{method}:{uri}".encode()).hexdigest()
    fields = {
        "username": hash_(f"{user}:{realm}".encode()).hexdigest() if userhash else user,
        "realm": realm, "nonce": nonce, "uri": uri, "algorithm": algorithm, "qop": "auth",
        "nc": f"{nc:08x}", "cnonce": cnonce,
        "response": hash_(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}".encode()).hexdigest(),
    }
    if userhash:
        fields["userhash"] = "true"
    fields.update(override or {})
    unquoted = ("algorithm", "qop", "nc", "userhash")
    return "Digest " + ", ".join(f"{k}={v}" if k in unquoted else f'{k}="{v}"'
                                 for k, v in fields.items() if v is not None)


__all__ = ["make_auth_site", "basic", "digest", "challenges", "htpasswd", "htdigest",
           "needs_apache_utils", "HASH_USERS", "REALM", "NONCE_SECRET"]
