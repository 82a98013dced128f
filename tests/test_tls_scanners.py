"""The shipped TLS snippet (conf/conf-available/10-ssl.conf) judged by TLS scanners, with
a certificate of a local CA: `sslyze --mozilla_config intermediate` finds it compliant
(about 2 s), and `testssl.sh` reports nothing HIGH or CRITICAL but the missing
revocation information a local CA does not provide (about 2 minutes: opt-in with
PYLIGHTTPD_TESTSSL=1).

sslyze pins a cryptography older than the server's, so it lives in a venv of its own:
    python3 -m venv /opt/sslyze && /opt/sslyze/bin/pip install sslyze
and is found as PYLIGHTTPD_SSLYZE=/opt/sslyze/bin/sslyze or as `sslyze` on the PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procutil import REPO
from serverproc import free_port, get, wait_until

SSLYZE = os.environ.get("PYLIGHTTPD_SSLYZE") or shutil.which("sslyze")
TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")


def _local_ca_certificate(base: Path) -> tuple[Path, Path]:
    """A CA, and a PEM (chain and key) for localhost it signed; the CA file."""
    ca_crt, ca_key = base / "ca.crt", base / "ca.key"
    run = lambda *args: subprocess.run(["openssl", *args], check=True,  # noqa: E731
                                       capture_output=True, timeout=30)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt,
        "-days", "365", "-subj", "/CN=Local Test CA",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "basicConstraints=critical,CA:TRUE")
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", base / "srv.key",
        "-out", base / "srv.csr", "-subj", "/CN=localhost")
    (base / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\n")
    run("x509", "-req", "-in", base / "srv.csr", "-CA", ca_crt, "-CAkey", ca_key,
        "-CAcreateserial", "-out", base / "srv.crt", "-days", "365",
        "-extfile", base / "ext.cnf")
    pem = base / "server.pem"
    pem.write_bytes((base / "srv.crt").read_bytes() + ca_crt.read_bytes()
                    + (base / "srv.key").read_bytes())
    return pem, ca_crt


@pytest.fixture(scope="module")
def snippet_site(tmp_path_factory):
    """conf/ with 10-ssl.conf enabled as shipped, its port made free, conf/ssl/server.pem
    signed by a local CA."""
    base = tmp_path_factory.mktemp("scanners")
    shutil.copytree(REPO / "conf", base / "conf", symlinks=True)
    pem, ca = _local_ca_certificate(base)
    shutil.copy(pem, base / "conf" / "ssl" / "server.pem")
    tls_port, port = free_port(), free_port()
    snippet = (REPO / "conf" / "conf-available" / "10-ssl.conf").read_text()
    enabled = base / "conf" / "conf-enabled"
    (enabled / "10-ssl.conf").write_text(snippet.replace(":8443", f":{tls_port}"))
    (enabled / "zz-test.conf").write_text(
        f'server.port := {port}\nserver.errorlog = "{base}/error.log"\n')
    with open(base / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "master.cli", "-D", "-f", str(base / "conf/pylighttpd.conf")],
            cwd=base, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: get(port, "/")[0] == 200)
        yield tls_port, ca, base
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.skipif(SSLYZE is None, reason="sslyze is not installed (see the docstring)")
def test_sslyze_finds_the_snippet_mozilla_intermediate_compliant(snippet_site):
    tls_port, ca, _ = snippet_site
    done = subprocess.run([SSLYZE, "--mozilla_config", "intermediate", "--certinfo_ca_file",
                           str(ca), f"localhost:{tls_port}"],
                          capture_output=True, text=True, timeout=60)
    assert f"localhost:{tls_port}: OK - Compliant." in done.stdout, done.stdout[-2000:]
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in done.stdout


@pytest.mark.skipif(TESTSSL is None, reason="testssl.sh (Debian package) is not installed")
@pytest.mark.skipif(os.environ.get("PYLIGHTTPD_TESTSSL") != "1",
                    reason="testssl.sh takes about 2 minutes: PYLIGHTTPD_TESTSSL=1 runs it")
def test_testssl_finds_nothing_high_but_revocation(snippet_site):
    tls_port, ca, base = snippet_site
    report = base / "testssl.json"
    subprocess.run([TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--add-ca",
                    str(ca), "--ip", "one", "--jsonfile", str(report),
                    f"localhost:{tls_port}"], capture_output=True, timeout=400)
    findings = json.loads(report.read_text())
    severe = {f["id"]: f["finding"] for f in findings
              if f["severity"] in ("HIGH", "CRITICAL") and f["id"] != "cert_revocation"}
    assert severe == {}
    assert any(f["id"] == "cipher_order" or f["id"].startswith("cipher") for f in findings)
