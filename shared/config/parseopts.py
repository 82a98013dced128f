"""server.http-parseopts: how a request-target is normalised, which targets are refused,
and whether GET and HEAD may carry a body, as lighttpd 1.4.69 reads the option list
(src/configfile.c config_http_parseopts; the URL rules are src/burl.c's, applied in
worker/urlnorm.py).

The URL_* values are lighttpd's own bits, so its documentation and sources map one to
one.  Options lighttpd does not know, values that are neither on nor off, and the two
pairs that contradict each other (`url-path-2f-decode` with `url-path-2f-reject`,
`url-path-dotseg-remove` with `url-path-dotseg-reject`) refuse the config, as in
lighttpd.  `header-strict` and `host-strict` are honoured when on (the default); a
config that turns one off is warned that pylighttpd keeps reading request heads and
Host values strictly (see `relaxed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .directives import DirectiveValueError, to_bool
from .values import Array

URL_NORMALIZE: Final = 0x8               # normalise %-encoding, upper-case hex
URL_UNRESERVED: Final = 0x10             # decode %-encoded unreserved characters
URL_REQUIRED: Final = 0x20               # ... and keep encoded only what must be
URL_CTRLS_REJECT: Final = 0x40           # 400 for a control character, raw or encoded
URL_BACKSLASH_TRANS: Final = 0x80        # "\" as "/": Windows and Cygwin only
URL_2F_DECODE: Final = 0x100             # "%2F" in the path as "/"
URL_2F_REJECT: Final = 0x200             # 400 for "%2F" in the path
URL_DOTSEG_REMOVE: Final = 0x400         # remove "." and ".." segments and "//"
URL_DOTSEG_REJECT: Final = 0x800         # 400 for them
URL_QUERY_20_PLUS: Final = 0x1000        # "%20" in the query as "+"
URL_INVALID_UTF8_REJECT: Final = 0x2000  # 400 for octets never found in UTF-8

DEFAULT_URL: Final = (URL_NORMALIZE | URL_UNRESERVED | URL_CTRLS_REJECT | URL_2F_DECODE
                      | URL_DOTSEG_REMOVE | URL_INVALID_UTF8_REJECT)

_URL_OPTIONS: Final = {
    "url-normalize": URL_NORMALIZE,
    "url-normalize-unreserved": URL_UNRESERVED,
    "url-normalize-required": URL_REQUIRED,
    "url-ctrls-reject": URL_CTRLS_REJECT,
    "url-path-backslash-trans": URL_BACKSLASH_TRANS,
    "url-path-2f-decode": URL_2F_DECODE,
    "url-path-2f-reject": URL_2F_REJECT,
    "url-path-dotseg-remove": URL_DOTSEG_REMOVE,
    "url-path-dotseg-reject": URL_DOTSEG_REJECT,
    "url-query-20-plus": URL_QUERY_20_PLUS,
    "url-invalid-utf8-reject": URL_INVALID_UTF8_REJECT,
}
# read strictly whatever the config says (lighttpd's defaults); host-normalize is
# implied by host-strict in lighttpd, so turning it off alone changes nothing there
STRICT_ALWAYS: Final = ("header-strict", "host-strict")
_ACCEPTED: Final = frozenset({"host-normalize", "method-get-body", *STRICT_ALWAYS})


@dataclass(frozen=True)
class ParseOptions:
    """The options in effect: `url` is a sum of URL_* bits (0: the target is used as
    it came, only its fragment dropped); `relaxed` names the strictness options the
    config turned off, which pylighttpd does not (a warning says so)."""

    url: int = DEFAULT_URL
    method_get_body: bool = False
    relaxed: tuple[str, ...] = ()


DEFAULT: Final = ParseOptions()


def _switch(key: str, value: object) -> bool:
    try:
        return to_bool(value)           # type: ignore[arg-type]
    except DirectiveValueError:
        raise DirectiveValueError(f'unrecognized value: {key} => {value} '
                                  '(expect "[enable|disable]")') from None


def parse_options(array: Array | None) -> ParseOptions:
    """The ParseOptions of a `server.http-parseopts` list, as lighttpd combines them:
    each option in turn on the defaults; `url-normalize` off drops every URL rule (and
    the options after it); with neither normalisation form left on, `unreserved` (with
    invalid UTF-8 refused, and %2F decoded unless asked not to) is kept."""
    if array is None:
        return DEFAULT
    url, decode_2f, get_body, relaxed = DEFAULT_URL, True, False, []
    for key, value in array.items():
        if key is None:
            raise DirectiveValueError("expected option => value pairs")
        on = _switch(key, value)
        option = _URL_OPTIONS.get(key)
        if option is None:
            if key not in _ACCEPTED:
                raise DirectiveValueError(f"unrecognized key: {key}")
            if key == "method-get-body":
                get_body = on
            elif key in STRICT_ALWAYS and not on:
                relaxed.append(key)
            continue
        if on:
            url |= option
            continue
        url &= ~option
        if option == URL_NORMALIZE:
            url = 0
            break
        if option == URL_2F_DECODE:
            decode_2f = False
    return ParseOptions(_completed(url, decode_2f), get_body, tuple(relaxed))


def _completed(url: int, decode_2f: bool) -> int:
    if not url:
        return 0
    url |= URL_NORMALIZE
    for remove, reject in (("url-path-2f-decode", "url-path-2f-reject"),
                           ("url-path-dotseg-remove", "url-path-dotseg-reject")):
        if url & _URL_OPTIONS[remove] and url & _URL_OPTIONS[reject]:
            raise DirectiveValueError(f"conflicting options: {remove}, {reject}")
    if not url & (URL_UNRESERVED | URL_REQUIRED):
        url |= URL_UNRESERVED | URL_INVALID_UTF8_REJECT
        if decode_2f and not url & URL_2F_REJECT:
            url |= URL_2F_DECODE
    return url


def relaxed_warning(options: ParseOptions) -> str | None:
    """What a config that turns strict parsing off is told."""
    if not options.relaxed:
        return None
    names = options.relaxed
    return (f"server.http-parseopts: {', '.join(names)} "
            f"{'is' if len(names) == 1 else 'are'} kept enabled: pylighttpd reads request "
            "heads and Host values strictly")
