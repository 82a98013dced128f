"""mod_openssl: TLS as lighttpd 1.4.69 configures it, with pyOpenSSL.

    server.modules += ( "mod_openssl" )
    $SERVER["socket"] == ":443" {
        ssl.engine  = "enable"
        ssl.pemfile = "/etc/ssl/example.pem"        # certificate chain (and key)
        ssl.privkey = "/etc/ssl/example.key"        # or the key apart
    }
    $HTTP["host"] == "other.example" { ssl.pemfile = "/etc/ssl/other.pem" }   # SNI

A connection accepted on a socket whose settings enable `ssl.engine` gets the TLS
transport (worker/tls.py) and the scheme "https" (`$HTTP["scheme"]`, the answer
cache's key, REQUEST_SCHEME / HTTPS=on for backends).  The certificate is chosen by
SNI as lighttpd chooses it: the config's conditions evaluated with the name the
client sent as the host, so `ssl.pemfile` in a `$HTTP["host"]` block serves that name.

Contexts are built at config time in the master (`prepare`), one per distinct set of
ssl.* values a block of the config yields, and inherited by every worker through fork:
OpenSSL's session-ticket keys are made with the context, so a ticket issued by one
worker resumes on any other.  The session-ID cache is off (it would be per worker);
tickets carry resumption, TLS 1.2 and 1.3 alike.  A certificate that does not load, or
a key that does not match it, is a config error at load, so a bad reload leaves the
old config serving.  A combination of ssl.* values met only at run time (settings
merged from sibling blocks) gets its context then, in the worker (its tickets resume
on that worker only).

Ticket keys (STEKs) rotate with every reload (`kill -HUP`), which also serves renewed
certificate files to new connections; between reloads they stay.  lighttpd rotates
its keys by itself (and reads them from `ssl.stek-file`); pyOpenSSL offers no way to
set or rotate them (no SSL_CTX_set_tlsext_ticket_keys nor its key callback, and the
OpenSSL it binds is its own, out of reach of ctypes), and contexts rebuilt in a worker
would hold keys the other workers do not know.  So they rotate by a graceful reload:
contrib/systemd/pylighttpd-rotate-keys.timer reloads daily (requests in flight finish
on the old workers); `ssl.stek-file` is not declared, hence warned about as unknown.

Defaults are Mozilla's "intermediate" profile (what testssl.sh and `sslyze
--mozilla_config intermediate` check): TLS 1.2 and later; TLS 1.2 ciphers ECDHE/DHE
with AES-GCM or ChaCha20-Poly1305 only (INTERMEDIATE_CIPHERS, replaced by
`ssl.cipher-list` or CipherString), TLS 1.3's three suites; key exchange over X25519,
P-256 and P-384 only (`ssl.ec-curve` or Curves / Groups replace the list; pyOpenSSL
has no public setter: OpenSSL's SSL_CTX_set1_groups_list is reached through the
binding pyOpenSSL carries); no TLS compression, no client-initiated renegotiation;
DHE over RFC 7919's ffdhe2048 unless `ssl.dh-file` names a group; the client's
order of suites, or the server's with `ssl.honor-cipher-order` or with
`ssl.cipher-list` set (as lighttpd orders them), where a client putting ChaCha20
first keeps it (PrioritizeChaCha); null, anonymous and export suites never, whatever
a cipher list says.  `ssl.openssl.ssl-conf-cmd` takes the commands pyOpenSSL's
bindings can apply: MinProtocol, MaxProtocol, Protocol, CipherString, Ciphersuites,
Curves / Groups, ECDHParameters, DHParameters, SignatureAlgorithms, lighttpd's
SecurityLevel, Options (OpenSSL's names, `+` / `-`, but for clearing what OpenSSL
sets itself); another command (NumTickets, RecordPadding, ClientSignatureAlgorithms
...) is a config error rather than silently ignored.

OCSP stapling: `ssl.stapling-file` (a DER response, as `openssl ocsp -respout` writes
it) is stapled to handshakes asking for it (status_request).  A file that is no OCSP
response is a config error; each worker stats it once a second and re-reads it when
it changed (lighttpd refreshes its stapling files on its own too), keeping the last
good response when the new file does not parse; a response past its nextUpdate is no
longer stapled.

`ssl.acme-tls-1` (RFC 8737, as lighttpd): a client offering ALPN "acme-tls/1" gets the
certificate `<dir>/<SNI name>.crt.pem` with its key `<dir>/<SNI name>.key.pem`, and the
connection closes once the handshake is done (no HTTP); no such file, or no SNI name,
ends the handshake with a fatal alert.  Without the key, "acme-tls/1" is just a
protocol not spoken.

Backends see the SSL_* variables lighttpd exports
(SSL_PROTOCOL, SSL_CIPHER, SSL_CIPHER_USEKEYSIZE, SSL_CIPHER_ALGKEYSIZE, and with a
client certificate SSL_CLIENT_VERIFY, SSL_CLIENT_S_DN, SSL_CLIENT_S_DN_*,
SSL_CLIENT_I_DN, SSL_CLIENT_M_SERIAL, SSL_CLIENT_CERT with exportcert; REMOTE_USER
from `ssl.verifyclient.username`).
"""

from __future__ import annotations

import importlib

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.x509 import ocsp
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as openssl_ffi, lib as openssl_lib

from shared.config.directives import Directive, Scope, Type
from shared.config.errors import ConfigError

from ..h2_offer import enabled as h2_enabled
from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..tls import TLSTransport

if TYPE_CHECKING:
    from shared.config.compiled import CompiledConfig
    from shared.config.directives import CheckResult
    from shared.config.tree import ConfigTree

    from ..connection import Connection
    from ..services import Services

DIRECTIVES = (
    Directive("ssl.engine", Type.BOOL, False, Scope.SOCKET, doc="TLS on this socket"),
    Directive("ssl.pemfile", Type.STRING, "", doc="certificate chain, PEM (and key)"),
    Directive("ssl.privkey", Type.STRING, "", doc="private key, PEM"),
    Directive("ssl.ca-file", Type.STRING, "", doc="CAs for client certificates"),
    Directive("ssl.ca-dn-file", Type.STRING, "", doc="CA names sent to clients"),
    Directive("ssl.ca-crl-file", Type.STRING, "", doc="CRLs for client certificates"),
    Directive("ssl.verifyclient.ca-file", Type.STRING, ""),
    Directive("ssl.verifyclient.ca-dn-file", Type.STRING, ""),
    Directive("ssl.verifyclient.ca-crl-file", Type.STRING, ""),
    Directive("ssl.verifyclient.activate", Type.BOOL, False),
    Directive("ssl.verifyclient.enforce", Type.BOOL, True),
    Directive("ssl.verifyclient.depth", Type.SHORT, 9),
    Directive("ssl.verifyclient.username", Type.STRING, ""),
    Directive("ssl.verifyclient.exportcert", Type.BOOL, False),
    Directive("ssl.cipher-list", Type.STRING, ""),
    # unset: the server's order when ssl.cipher-list is set, as lighttpd 1.4.69 orders
    # (it knows no such key); the client's order over the default all-AEAD suites
    Directive("ssl.honor-cipher-order", Type.BOOL, None),
    Directive("ssl.openssl.ssl-conf-cmd", Type.ARRAY_KVSTRING, ()),
    Directive("ssl.dh-file", Type.STRING, ""),
    Directive("ssl.ec-curve", Type.STRING, ""),
    Directive("ssl.stapling-file", Type.STRING, "", doc="OCSP response (DER) to staple"),
    Directive("ssl.acme-tls-1", Type.STRING, "",
              doc="directory of <name>.crt.pem / <name>.key.pem for ALPN acme-tls/1"),
    Directive("ssl.read-ahead", Type.BOOL, False),
    Directive("ssl.disable-client-renegotiation", Type.BOOL, True),
)
# the values a context is made of, in the order of its key
CONTEXT_KEYS = tuple(d.name for d in DIRECTIVES
                     if d.name not in ("ssl.engine", "ssl.verifyclient.username",
                                       "ssl.verifyclient.exportcert", "ssl.acme-tls-1"))
PROTOCOLS = {"none": 0, "tlsv1.2": SSL.TLS1_2_VERSION, "tlsv1.3": SSL.TLS1_3_VERSION,
             "tlsv1": SSL.TLS1_VERSION, "tlsv1.1": SSL.TLS1_1_VERSION}
# ssl-conf-cmd Options names (OpenSSL's SSL_CONF table) -> the SSL_OP_ flag, negative
# for a flag that turns the named feature off; values of OpenSSL 3's ABI where
# pyOpenSSL names no constant
OPTIONS = {"serverpreference": SSL.OP_CIPHER_SERVER_PREFERENCE,
           "sessionticket": -SSL.OP_NO_TICKET,
           "prioritizechacha": 1 << 21,
           "compression": -SSL.OP_NO_COMPRESSION,
           "bugs": SSL.OP_ALL,
           "dhsingle": 0, "ecdhsingle": 0,           # always so since OpenSSL 1.1
           "emptyfragments": -SSL.OP_DONT_INSERT_EMPTY_FRAGMENTS,
           "noresumptiononrenegotiation": 1 << 16,
           "norenegotiation": SSL.OP_NO_RENEGOTIATION,
           "clientrenegotiation": 1 << 8,
           "unsafelegacyrenegotiation": 1 << 18,
           "unsafelegacyserverconnect": SSL.OP_LEGACY_SERVER_CONNECT,
           "legacyserverconnect": SSL.OP_LEGACY_SERVER_CONNECT,
           "encryptthenmac": -(1 << 19),
           "allownodhekex": 1 << 10,
           "middleboxcompat": 1 << 20,
           "antireplay": -(1 << 24),
           "extendedmastersecret": -(1 << 0),
           "canames": -(1 << 9),
           "ktls": 1 << 3,
           "ignoreunexpectedeof": SSL.OP_IGNORE_UNEXPECTED_EOF}
ALPN_HTTP11 = b"http/1.1"
ALPN_H2 = b"h2"
ALPN_ACME = b"acme-tls/1"
# Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3 keeps OpenSSL's three, all allowed):
# forward secrecy and AEAD only, no CBC, no RSA key exchange
INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
DEFAULT_GROUPS = "X25519:P-256:P-384"        # Mozilla's intermediate curves
# RFC 7919's 2048-bit group (`openssl genpkey -genparam -algorithm DH -pkeyopt
# group:ffdhe2048`), Mozilla's ffdhe2048.txt
FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
MAX_SNI_CHOICES = 1024
X509_V_ERR_CERT_CHAIN_TOO_LONG = 22
Key = tuple[Any, ...]


class TLSConfigError(ValueError):
    """An ssl.* value pyOpenSSL or OpenSSL cannot use."""


# ----------------------------------------------------------------- contexts
def context_key(values: dict) -> Key:
    return tuple(_hashable(values[name]) for name in CONTEXT_KEYS)


def _hashable(value: Any) -> Any:
    return tuple(value.items()) if hasattr(value, "items") else \
        tuple(value) if isinstance(value, (list, tuple)) else value


def build_context(values: dict, staplings: "dict[str, Stapling]") -> SSL.Context:
    """An SSL.Context from a block's effective ssl.* values; TLSConfigError says why
    it cannot be made.  Its OCSP response joins `staplings` (refreshed by path)."""
    try:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        options = SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION
        if _honors_cipher_order(values):
            # a client that puts ChaCha20 first (no AES instructions) keeps it, as
            # lighttpd orders suites
            options |= SSL.OP_CIPHER_SERVER_PREFERENCE | OPTIONS["prioritizechacha"]
        on, off = _conf_options(values["ssl.openssl.ssl-conf-cmd"])
        if off & openssl_lib.SSL_CTX_get_options(context._context):   # noqa: SLF001
            raise TLSConfigError("ssl-conf-cmd Options: an option OpenSSL sets by "
                                 "default cannot be cleared here")
        context.set_options((options | on) & ~off)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # an idle keep-alive connection holds no record buffers (some 20 KiB each)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        _load_certificate(context, values)
        ciphers = values["ssl.cipher-list"] or INTERMEDIATE_CIPHERS
        context.set_cipher_list(_no_null_suites(ciphers))
        if values["ssl.dh-file"]:
            context.load_tmp_dh(values["ssl.dh-file"].encode())
        else:
            _use_ffdhe2048(context)
        set_groups(context, values["ssl.ec-curve"] or DEFAULT_GROUPS)
        _apply_conf_commands(context, values["ssl.openssl.ssl-conf-cmd"], ciphers)
        _client_verification(context, values)
        _stapling(context, values["ssl.stapling-file"], staplings)
        h2 = h2_enabled(values, cleartext=False)
        context.set_alpn_select_callback(_alpn_selector(h2))
        if h2:
            _load_http2()
    except (SSL.Error, crypto.Error, OSError, ValueError) as err:
        raise TLSConfigError(_reason(err)) from None
    return context


def _honors_cipher_order(values: dict) -> bool:
    """ssl.honor-cipher-order as set, else whether ssl.cipher-list is (lighttpd 1.4.69
    takes the server's order for a cipher list set there, the client's otherwise)."""
    honor = values["ssl.honor-cipher-order"]
    return bool(values["ssl.cipher-list"]) if honor is None else honor


def _no_null_suites(ciphers: str) -> bytes:
    """A cipher string with the suites that encrypt or authenticate nothing (and the
    export ones) taken out, whatever it says, as lighttpd takes them out."""
    return (ciphers + ":!aNULL:!eNULL:!EXP").encode()


def _use_ffdhe2048(context: SSL.Context) -> None:
    """RFC 7919's ffdhe2048 group for the DHE suites, as Mozilla's profile and lighttpd
    (SSL_CTX_set_dh_auto) give them a group: without one, they are never chosen.
    pyOpenSSL reads DH parameters from a file only; OpenSSL's PEM reader is reached
    through its bindings."""
    bio = openssl_lib.BIO_new_mem_buf(FFDHE2048, len(FFDHE2048))
    try:
        group = openssl_lib.PEM_read_bio_DHparams(bio, openssl_ffi.NULL, openssl_ffi.NULL,
                                                  openssl_ffi.NULL)
    finally:
        openssl_lib.BIO_free(bio)
    try:
        openssl_lib.SSL_CTX_set_tmp_dh(context._context, group)  # noqa: SLF001
    finally:
        openssl_lib.DH_free(group)


def _load_http2() -> None:
    """ALPN offers "h2": the HTTP/2 stack is imported now, in the master building the
    contexts, so that the workers share it (the core imports it only when a
    connection first speaks HTTP/2, to spare it to plain HTTP sites)."""
    importlib.import_module("..h2", __package__)


def _reason(err: Exception) -> str:
    if isinstance(err, SSL.Error) and err.args and isinstance(err.args[0], list):
        return "; ".join(str(entry[-1]) for entry in err.args[0]) or "OpenSSL error"
    return str(err)


def _load_certificate(context: SSL.Context, values: dict) -> None:
    pemfile = values["ssl.pemfile"]
    if not pemfile:
        raise TLSConfigError("ssl.pemfile has to be set when ssl.engine is enabled")
    keyfile = values["ssl.privkey"] or pemfile
    for path in {pemfile, keyfile}:
        _readable(path)
    context.use_certificate_chain_file(pemfile)
    try:
        context.use_privatekey_file(keyfile)
        context.check_privatekey()
    except SSL.Error as err:
        raise TLSConfigError(f"private key {keyfile} does not match the certificate in "
                             f"{pemfile} ({_reason(err)})") from None


def _readable(path: str) -> None:
    """OSError naming the file when it cannot be read (OpenSSL's own error says only
    "system lib")."""
    with open(path, "rb"):
        pass


def set_groups(context: SSL.Context, names: str) -> None:
    """The key-exchange groups offered, e.g. "X25519:P-256:P-384" (OpenSSL's
    SSL_CTX_set1_groups_list, which pyOpenSSL's bindings carry as set1_curves_list;
    set_tmp_ecdh takes one curve only)."""
    listed = ":".join(_curve_name(name) for name in names.replace(",", ":").split(":")
                      if name.strip())
    if not listed or not openssl_lib.SSL_CTX_set1_curves_list(
            context._context, listed.encode()):      # noqa: SLF001 (no public setter)
        raise TLSConfigError(f'unknown curve in "{names}"')


def _commands(commands: Any) -> list[tuple[str, str]]:
    return list(commands.items() if hasattr(commands, "items") else commands)


def _conf_options(commands: Any) -> tuple[int, int]:
    """The OpenSSL options `Options` commands set and clear (`Name` or `+Name` sets,
    `-Name` clears; a name that disables a feature works the other way round)."""
    on = off = 0
    for name, value in _commands(commands):
        if name.lower() != "options":
            continue
        for item in (part.strip() for part in value.split(",") if part.strip()):
            clear = item.startswith("-")
            flag = OPTIONS.get(item.lstrip("+-").lower())
            if flag is None:
                raise TLSConfigError(f'ssl-conf-cmd Options: unsupported "{item}"')
            if flag < 0:
                flag, clear = -flag, not clear
            if clear:
                off |= flag
            else:
                on |= flag
    return on, off


def _apply_conf_commands(context: SSL.Context, commands: Any, ciphers: str) -> None:
    """The commands OpenSSL's SSL_CONF_cmd would apply (lighttpd hands them to it;
    pyOpenSSL's bindings carry no SSL_CONF), with lighttpd's SecurityLevel; `ciphers`
    is the cipher string set before them."""
    for name, value in _commands(commands):
        command = name.lower()
        if command in ("minprotocol", "maxprotocol"):
            version = PROTOCOLS.get(value.lower())
            if version is None:
                raise TLSConfigError(f'ssl-conf-cmd {name}: unknown protocol "{value}"')
            (context.set_min_proto_version if command == "minprotocol"
             else context.set_max_proto_version)(version)
        elif command == "protocol":
            _protocol_list(context, value)
        elif command == "cipherstring":
            ciphers = value or "HIGH"
            context.set_cipher_list(_no_null_suites(ciphers))
        elif command == "securitylevel":       # lighttpd's own command
            level = _security_level(value)
            if level >= 0:
                context.set_cipher_list(_no_null_suites(f"{ciphers}:@SECLEVEL={level}"))
        elif command == "ciphersuites":
            context.set_tls13_ciphersuites(value.encode())
        elif command in ("curves", "groups"):
            set_groups(context, value)
        elif command == "ecdhparameters":
            if value.lower() not in ("automatic", "auto"):
                set_groups(context, value)
        elif command == "dhparameters":
            context.load_tmp_dh(value.encode())
        elif command == "signaturealgorithms":
            if openssl_lib.SSL_CTX_set1_sigalgs_list(
                    context._context, value.encode()) != 1:   # noqa: SLF001
                raise TLSConfigError(f'ssl-conf-cmd SignatureAlgorithms: "{value}"')
        elif command != "options":       # options: set with the others, before
            raise TLSConfigError(f'ssl-conf-cmd "{name}" is not supported')


def _security_level(value: str) -> int:
    """SecurityLevel's number, as OpenSSL takes it (above 5 is 5); lighttpd reads a
    negative one as none and a word as 0, which is refused here."""
    try:
        level = int(value.strip())
    except ValueError:
        raise TLSConfigError(f'ssl-conf-cmd SecurityLevel: "{value}" is no number') from None
    return min(level, 5)


def _curve_name(name: str) -> str:
    name = name.strip()
    return {"p-256": "prime256v1", "p-384": "secp384r1", "p-521": "secp521r1",
            "x25519": "X25519", "x448": "X448"}.get(name.lower(), name)


def _protocol_list(context: SSL.Context, value: str) -> None:
    """`Protocol = "-ALL, TLSv1.2, TLSv1.3"`: the lowest and highest enabled."""
    enabled = set()
    for item in (part.strip().lower() for part in value.split(",")):
        if item in ("-all", "all"):
            enabled = set() if item == "-all" else {SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION}
        elif item.lstrip("-") in PROTOCOLS and item.lstrip("-") != "none":
            version = PROTOCOLS[item.lstrip("-")]
            (enabled.discard if item.startswith("-") else enabled.add)(version)
        else:
            raise TLSConfigError(f'ssl-conf-cmd Protocol: unknown "{item}"')
    if not enabled:
        raise TLSConfigError("ssl-conf-cmd Protocol enables no protocol")
    context.set_min_proto_version(min(enabled))
    context.set_max_proto_version(max(enabled))


def _client_verification(context: SSL.Context, values: dict) -> None:
    ca_file = values["ssl.verifyclient.ca-file"] or values["ssl.ca-file"]
    if ca_file:
        context.load_verify_locations(ca_file.encode())
    if not values["ssl.verifyclient.activate"]:
        return
    if not ca_file:
        raise TLSConfigError("ssl.verifyclient.activate needs ssl.ca-file")
    names = values["ssl.verifyclient.ca-dn-file"] or values["ssl.ca-dn-file"] or ca_file
    context.set_client_ca_list(_certificate_names(names))
    crl_file = values["ssl.verifyclient.ca-crl-file"] or values["ssl.ca-crl-file"]
    if crl_file:
        _load_crls(context, crl_file)
    context.set_verify(*verification(values))
    context.set_verify_depth(values["ssl.verifyclient.depth"] + 1)


def verification(values: dict) -> tuple[int, Any]:
    """The verify mode and callback of a block's ssl.verifyclient.* values.  A
    connection whose context SNI replaces keeps the first context's (OpenSSL copies
    neither with SSL_set_SSL_CTX), so the SNI choice sets them again, as lighttpd
    does."""
    if not values["ssl.verifyclient.activate"]:
        return SSL.VERIFY_NONE, None
    enforce = values["ssl.verifyclient.enforce"]
    most = values["ssl.verifyclient.depth"]

    def verified(connection: SSL.Connection, _cert: crypto.X509, error: int,
                 depth: int, ok: int) -> bool:
        """With enforce disabled the handshake goes on whatever the verdict: the
        backends learn it from SSL_CLIENT_VERIFY."""
        if depth > most:
            ok, error = 0, X509_V_ERR_CERT_CHAIN_TOO_LONG
        if not ok:
            _note_verify_error(connection, error)
        return bool(ok) or not enforce

    mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if enforce else 0)
    return mode, verified


def _certificate_names(path: str) -> list[crypto.X509Name]:
    with open(path, "rb") as file:
        data = file.read()
    names = []
    marker = b"-----END CERTIFICATE-----"
    for block in data.split(marker)[:-1]:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, block + marker)
        names.append(certificate.get_subject())
    return names


def _load_crls(context: SSL.Context, path: str) -> None:
    with open(path, "rb") as file:
        data = file.read()
    store = context.get_cert_store()
    marker = b"-----END X509 CRL-----"
    for block in data.split(marker)[:-1]:
        store.add_crl(crypto.load_crl(crypto.FILETYPE_PEM, block + marker))
    store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)


def _note_verify_error(connection: SSL.Connection, error: int) -> None:
    """The first reason the client's chain failed, as OpenSSL words it."""
    state = connection.get_app_data()
    if isinstance(state, _TLSState) and not state.verify_error:
        state.verify_error = openssl_ffi.string(
            openssl_lib.X509_verify_cert_error_string(error)).decode()


class Stapling:
    """An OCSP response file (DER) stapled to handshakes that ask for one; re-read when
    its modification time changes (checked by the workers once a second, one stat),
    as lighttpd refreshes its stapling files without a reload.  A response past its
    nextUpdate is no longer stapled (a client would reject it)."""

    __slots__ = ("path", "response", "expires", "mtime_ns")

    def __init__(self, path: str) -> None:
        self.path = path
        self.response = b""
        self.expires: float | None = None
        self.mtime_ns = 0
        self.load(os.stat(path).st_mtime_ns)

    def load(self, mtime_ns: int) -> None:
        """Read the file; ValueError when it holds no OCSP response."""
        with open(self.path, "rb") as file:
            data = file.read()
        parsed = ocsp.load_der_ocsp_response(data)
        if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"OCSP response status {parsed.response_status.name}")
        expires = parsed.next_update_utc.timestamp() if parsed.next_update_utc else None
        self.response, self.expires, self.mtime_ns = data, expires, mtime_ns

    def refresh(self) -> str:
        """Re-read a changed file; what went wrong, or "" (the old response stays)."""
        try:
            mtime_ns = os.stat(self.path).st_mtime_ns
            if mtime_ns != self.mtime_ns:
                self.load(mtime_ns)
        except (OSError, ValueError) as err:
            self.mtime_ns = -1            # tried: said once, retried when it changes
            return f"ssl.stapling-file {self.path}: {err}"
        return ""

    def staple(self, _connection: SSL.Connection, _data: Any) -> bytes:
        if self.expires is not None and self.expires < time.time():
            return b""
        return self.response


def _stapling(context: SSL.Context, path: str, staplings: dict[str, Stapling]) -> None:
    if not path:
        return
    stapling = staplings.get(path)
    if stapling is None:
        stapling = staplings[path] = Stapling(path)
    context.set_ocsp_server_callback(stapling.staple)


def _alpn_selector(h2: bool) -> Any:
    """ALPN as lighttpd answers it: "acme-tls/1" when the socket or name has
    ssl.acme-tls-1, else "h2" first when server.h2proto allows it."""
    preferred = (ALPN_H2, ALPN_HTTP11) if h2 else (ALPN_HTTP11,)

    def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
        state = connection.get_app_data()
        if ALPN_ACME in offered and isinstance(state, _TLSState) and state.acme_dir:
            _use_acme_certificate(connection, state.acme_dir)
            return ALPN_ACME
        for protocol in preferred:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS
    return select


class AcmeChallengeError(SSL.Error):
    """No challenge certificate for the name: the handshake ends with a fatal alert
    (the transport sees an SSL.Error, the connection closes)."""


def _use_acme_certificate(connection: SSL.Connection, directory: str) -> None:
    """RFC 8737's challenge: the certificate `<ssl.acme-tls-1>/<SNI name>.crt.pem`
    (key `.key.pem`) replaces the site's for this handshake, which carries no HTTP
    (the transport closes once it is done)."""
    name = (connection.get_servername() or b"").decode("ascii", "replace").lower()
    name = name.rstrip(".")
    if not name or "/" in name or name.startswith("."):
        raise AcmeChallengeError(f"acme-tls/1 without a usable server name: {name!r}")
    base = os.path.join(directory, name)
    try:
        with open(base + ".crt.pem", "rb") as file:
            certificate = crypto.load_certificate(crypto.FILETYPE_PEM, file.read())
        with open(base + ".key.pem", "rb") as file:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, file.read())
        connection.use_certificate(certificate)
        connection.use_privatekey(key)
    except (OSError, crypto.Error, SSL.Error) as err:
        raise AcmeChallengeError(f"acme-tls/1 {base}.crt.pem: {_reason(err)}") from None


# ------------------------------------------------------------ config time
@dataclass
class Prepared:
    """The contexts built in the master, by context_key, and their OCSP responses."""

    contexts: dict[Key, SSL.Context]
    staplings: dict[str, Stapling]


def _blocks_with_tls(tree: "ConfigTree", checked: "CheckResult") -> list[tuple[dict, Any]]:
    """Each block that sets an ssl.* key, with the effective values of its chain
    (global, then each enclosing block) and the place to blame."""
    found = []
    for block in tree.blocks:
        own = checked.settings.get(block.index, {})
        ssl_keys = [key for key in own if key.startswith("ssl.")]
        if not ssl_keys:
            continue
        chain, node = [], block
        while node is not None:
            chain.append(checked.settings.get(node.index, {}))
            node = node.parent
        values: dict[str, Any] = {}
        for settings in reversed(chain):
            values.update(settings)
        found.append((values, block.keys.get(ssl_keys[0]).position))
    return found


def prepare_contexts(tree: "ConfigTree", checked: "CheckResult",
                     compiled: "CompiledConfig") -> Prepared:
    contexts: dict[Key, SSL.Context] = {}
    staplings: dict[str, Stapling] = {}
    defaults = compiled.globals
    for own, position in _blocks_with_tls(tree, checked):
        values = {**defaults, **own}
        if not values["ssl.pemfile"] and not values["ssl.engine"]:
            continue            # e.g. ssl.cipher-list alone, for blocks set elsewhere
        key = context_key(values)
        if key not in contexts:
            try:
                contexts[key] = build_context(values, staplings)
            except TLSConfigError as err:
                raise ConfigError(f"mod_openssl: {err}", position) from None
    return Prepared(contexts, staplings)


# -------------------------------------------------------------------- run time
class _TLSState:
    """What a connection's TLS learned during its handshake (its SSL app data)."""

    __slots__ = ("socket_spec", "remote_ip", "verify_error", "acme_dir", "environments")

    def __init__(self, socket_spec: str, remote_ip: str, acme_dir: str) -> None:
        self.socket_spec = socket_spec
        self.remote_ip = remote_ip
        self.verify_error = ""
        self.acme_dir = acme_dir       # the socket's ssl.acme-tls-1 (SNI may change it)
        # the SSL_* variables made for this connection, by the request settings they
        # depend on: the handshake's facts never change after it (no renegotiation)
        self.environments: dict[tuple, dict[str, str]] = {}

    def condition_value(self, field: str) -> str:
        if field == "socket":
            return self.socket_spec
        if field == "remoteip":
            return self.remote_ip
        if field == "scheme":
            return "https"
        return ""


class _NameChoice(NamedTuple):
    """What an SNI name chooses: its context (None: the socket's stays), its
    ssl.acme-tls-1 directory, its verify mode and callback."""

    context: SSL.Context | None
    acme_dir: str
    verification: tuple[int, Any]


class _SNISubject:
    """The conditions' view of a handshake: the SNI name as the host."""

    __slots__ = ("state", "host")

    def __init__(self, state: _TLSState, host: str) -> None:
        self.state = state
        self.host = host

    def condition_value(self, field: str) -> str:
        return self.host if field == "host" else self.state.condition_value(field)


class Module(BaseModule):
    name = "openssl"
    directives = DIRECTIVES
    replay_safe = True            # acts on connections; answers are the others'

    @classmethod
    def prepare(cls, tree: "ConfigTree", checked: "CheckResult",
                compiled: "CompiledConfig") -> Prepared:
        return prepare_contexts(tree, checked, compiled)

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        prepared = config.prepared.get(self.name)
        self.contexts: dict[Key, SSL.Context] = dict(prepared.contexts) if prepared else {}
        self.staplings: dict[str, Stapling] = prepared.staplings if prepared else {}
        self.by_socket: dict[str, tuple[SSL.Context, str] | None] = {}
        self.by_name: dict[tuple[str, str], _NameChoice] = {}
        for context in set(self.contexts.values()):
            context.set_tlsext_servername_callback(self._servername)

    def _context(self, values: dict) -> SSL.Context:
        key = context_key(values)
        context = self.contexts.get(key)
        if context is None:
            context = self.contexts[key] = build_context(values, self.staplings)
            context.set_tlsext_servername_callback(self._servername)
        return context

    def handle_trigger(self, now: float) -> None:
        """Stapling files renewed on disk are served without a reload."""
        for stapling in self.staplings.values():
            problem = stapling.refresh()
            if problem:
                self.services.log_error("mod_openssl.c", problem)

    def handle_connection_accept(self, connection: "Connection") -> None:
        spec = connection.socket_spec
        try:
            chosen = self.by_socket[spec]
        except KeyError:
            values = self.config.settings_for(connection).values
            chosen = self.by_socket[spec] = (self._context(values), values["ssl.acme-tls-1"]) \
                if values["ssl.engine"] else None
        if chosen is None:
            return
        context, acme_dir = chosen
        transport = TLSTransport(connection.transport.sock, context)
        transport.tls.set_app_data(_TLSState(spec, connection.remote_ip, acme_dir))
        connection.transport = transport
        connection.scheme = "https"

    def _servername(self, tls: SSL.Connection) -> None:
        """SNI: the certificate and client verification the config gives this name on
        this socket."""
        name = tls.get_servername()
        state = tls.get_app_data()
        if not name or not isinstance(state, _TLSState):
            return
        host = name.decode("ascii", "replace").lower().rstrip(".")
        choice = (state.socket_spec, host)
        chosen = self.by_name.get(choice)
        if chosen is None:
            chosen = self._by_name(state, host)
            if len(self.by_name) >= MAX_SNI_CHOICES:
                self.by_name.clear()
            self.by_name[choice] = chosen
        state.acme_dir = chosen.acme_dir
        if chosen.context is not None:
            tls.set_context(chosen.context)
            tls.set_verify(*chosen.verification)

    def _by_name(self, state: _TLSState, host: str) -> "_NameChoice":
        values = self.config.settings_for(_SNISubject(state, host)).values
        context = None
        if values["ssl.pemfile"]:
            try:
                context = self._context(values)
            except TLSConfigError as err:
                self.services.log_error("mod_openssl.c", f"SNI {host}: {err}")
        return _NameChoice(context, values["ssl.acme-tls-1"], verification(values))

    def handle_uri_raw(self, request: Request) -> HandlerResult:
        """The TLS facts backends see (lighttpd's https_add_ssl_client_entries)."""
        tls = getattr(request.connection.transport, "tls", None)   # also under a wrapper
        if tls is not None:
            env = request.env
            if env is None:
                env = request.env = {}
            env.update(connection_environment(tls, request.settings.values))
        return None


def connection_environment(tls: SSL.Connection, values: dict) -> dict[str, str]:
    """ssl_environment, made once per connection and the request settings it reads
    (asking OpenSSL for each request's would cost several calls)."""
    state = tls.get_app_data()
    if not isinstance(state, _TLSState):
        return ssl_environment(tls, values)
    key = (values["ssl.verifyclient.activate"], values["ssl.verifyclient.exportcert"],
           values["ssl.verifyclient.username"])
    env = state.environments.get(key)
    if env is None:
        env = state.environments[key] = ssl_environment(tls, values)
    return env


def ssl_environment(tls: SSL.Connection, values: dict) -> dict[str, str]:
    """As lighttpd 1.4.69 sets them: a client certificate that failed verification
    gives SSL_CLIENT_VERIFY=FAILED:<reason> alone (lighttpd words the reason as an
    undecoded OpenSSL error code; OpenSSL's verify text is said here); the DNs in
    OpenSSL's one-line form ("C = DE, CN = alice"); SSL_CLIENT_I_DN* are added, as
    Apache's mod_ssl sets them."""
    env = {"SSL_PROTOCOL": tls.get_protocol_version_name() or "",
           "SSL_CIPHER": tls.get_cipher_name() or ""}
    bits = tls.get_cipher_bits()
    if bits:
        env["SSL_CIPHER_USEKEYSIZE"] = env["SSL_CIPHER_ALGKEYSIZE"] = str(bits)
    if not values["ssl.verifyclient.activate"]:
        return env
    state = tls.get_app_data()
    error = state.verify_error if isinstance(state, _TLSState) else ""
    certificate = tls.get_peer_certificate()
    if error or certificate is None:
        env["SSL_CLIENT_VERIFY"] = f"FAILED:{error}" if error else "NONE"
        return env
    env["SSL_CLIENT_VERIFY"] = "SUCCESS"
    _add_names(env, "SSL_CLIENT_S_DN", certificate.get_subject())
    _add_names(env, "SSL_CLIENT_I_DN", certificate.get_issuer())
    serial = format(certificate.get_serial_number(), "X")
    env["SSL_CLIENT_M_SERIAL"] = serial.zfill(len(serial) + len(serial) % 2)
    if values["ssl.verifyclient.exportcert"]:
        env["SSL_CLIENT_CERT"] = crypto.dump_certificate(
            crypto.FILETYPE_PEM, certificate).decode()
    username = values["ssl.verifyclient.username"]
    if username and env.get(username):
        env["REMOTE_USER"] = env[username]
        env["AUTH_TYPE"] = "SSL_CLIENT_VERIFY"
    return env


def _add_names(env: dict[str, str], prefix: str, name: crypto.X509Name) -> None:
    parts = [(key.decode(), value.decode("utf-8", "replace"))
             for key, value in name.get_components()]
    env[prefix] = ", ".join(f"{key} = {_oneline_value(value)}" for key, value in parts)
    for key, value in parts:
        env[f"{prefix}_{key}"] = value


def _oneline_value(value: str) -> str:
    """A DN value as XN_FLAG_ONELINE prints it: quoted when it holds a separator,
    control characters escaped."""
    value = "".join(ch if ch.isprintable() else f"\\{ord(ch):02X}" for ch in value)
    if any(ch in value for ch in ',+;<>"=#') or value != value.strip():
        return '"' + value.replace('"', '\\"') + '"'
    return value
