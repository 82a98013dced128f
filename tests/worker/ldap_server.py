"""A real OpenLDAP slapd for tests, started in a temporary directory on a loopback port
(never the system's service): an mdb database under `dc=example,dc=org`, loaded with
slapadd before slapd starts.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from held_backend import free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
needs_slapd = pytest.mark.skipif(
    not (os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK) and shutil.which("openssl")),
    reason="OpenLDAP's slapd (Debian: slapd ldap-utils) or openssl is not installed")
BASE_DN = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PW = "adminpw"
START_TIMEOUT = 10.0

_CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {base}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "{suffix}"
rootdn "{rootdn}"
rootpw {rootpw}
directory {base}/db
"""


def _with_tls(conf: str, base: Path, certificate: Path) -> str:
    """slapd.conf offering StartTLS with a self-signed certificate for `localhost` (and
    for this machine's name: OpenLDAP's client checks that one when told localhost)."""
    key = base / "localhost.key"
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in sorted(names))],
                   check=True, capture_output=True, timeout=60)
    tls = f"TLSCertificateFile {certificate}\nTLSCertificateKeyFile {key}\n"
    return conf.replace("database mdb", tls + "database mdb", 1)


class Slapd:
    """slapd serving `ldif` on 127.0.0.1:port and a unix socket (`ldapi`) until stop()."""

    def __init__(self, base: Path, ldif: str, tls: bool = False) -> None:
        (base / "db").mkdir(parents=True)
        self.conf = base / "slapd.conf"
        conf = _CONF.format(base=base, suffix=BASE_DN, rootdn=ROOT_DN, rootpw=ROOT_PW)
        self.certificate = base / "localhost.crt"
        if tls:
            conf = _with_tls(conf, base, self.certificate)
        self.conf.write_text(conf)
        (base / "data.ldif").write_text(ldif)
        subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(base / "data.ldif")],
                       check=True, capture_output=True, timeout=30)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldapi = "ldapi://" + quote(str(base / "ldapi"), safe="")     # a unix socket
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(self.conf), "-h", f"{self.url} {self.ldapi}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.process.stderr.read()!r}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not listen in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def entries_ldif(*entries: dict[str, list[str] | str]) -> str:
    """LDIF text of the base entry followed by `entries` (each with its "dn"; values
    beyond ASCII base64-encoded, as LDIF wants them)."""
    blocks = [f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
              "o: Example\ndc: example\n"]
    for entry in entries:
        lines = []
        for key, value in entry.items():
            for item in [value] if isinstance(value, str) else value:
                lines.append(f"{key}: {item}" if item.isascii() else
                             f"{key}:: {base64.b64encode(item.encode()).decode()}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
