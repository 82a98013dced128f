#!/usr/bin/env python3
"""Generate conf/mime-types.conf (a lighttpd ``mimetype.assign`` table).

This is a faithful Python port of Debian's
``/usr/share/lighttpd/create-mime.conf.pl`` (lighttpd 1.4.69 package), so the
table it prints is the one Debian's lighttpd.conf obtains through::

    include_shell "/usr/share/lighttpd/create-mime.conf.pl"

Rules carried over from the perl script:

* every ``type/subtype ext1 ext2 ...`` line of mime.types maps ``.ext`` to the
  type; lighttpd matches suffixes case-insensitively, so case-insensitive
  duplicates keep the spelling seen first;
* conflicting types for one extension are resolved: a few manual overrides
  (fonts, ``.ra``, ``.asn``, ``.ent``), then non ``x-`` beats ``x-``,
  ``text/`` beats ``application/`` for the same subtype, non ``vnd.`` beats
  ``vnd.``, and anything else becomes ``application/octet-stream``;
* extra entries: ``.dtd``, ``.js``/``.mjs`` (``text/javascript``, RFC 9239)
  and a few useful ones (``.tar.gz``, ``.log``, ``README``, ``Makefile`` ...)
  unless already present;
* ``;charset=utf-8`` is appended to ``text/css``, ``text/plain`` and the
  other ``text/*`` subtypes listed in ``TEXT_UTF8`` (not ``text/html``);
* lighttpd uses the *first* matching suffix, so entries are sorted with the
  longest suffixes (most dots) first, then by type (``x-``/``vnd.`` last),
  then by extension; the table ends with ``"" => "application/octet-stream"``.

Usage::

    python3 conf/make-mime-types.py [-v] [/etc/mime.types] > conf/mime-types.conf

The mime.types path defaults to ``/etc/mime.types``; ``-v`` reports merged
duplicates on stderr (like the perl script's ``-v``).  Stdlib only.
"""

from __future__ import annotations

import re
import sys

# text/* subtypes served as "text/...;charset=utf-8" (text/html deliberately
# not included: html documents declare their own charset).
TEXT_UTF8 = frozenset("""
    css csv markdown plain x-bibtex x-boo x-c++hdr x-c++src x-chdr x-csh
    x-csrc x-dsrc x-diff x-haskell x-java x-lilypond x-literate-haskell
    x-makefile x-moc x-pascal x-perl x-python x-scala x-sh x-tcl x-tex
""".split())

# extension -> {type found in mime.types: type to use instead}
MANUAL_CONFLICTS_RESOLVE = {
    ".ra": {"audio/x-pn-realaudio": "audio/x-realaudio"},
    # use font media types from iana registry
    ".otf": {
        "application/font-sfnt": "font/ttf",
        "font/sfnt": "font/ttf",
        "font/ttf": "font/ttf",
    },
    ".ttf": {
        "application/font-sfnt": "font/ttf",
        "font/otf": "font/ttf",
        "font/sfnt": "font/ttf",
    },
    ".woff": {"application/font-woff": "font/woff"},
    # end of fonts
    ".asn": {"chemical/x-ncbi-asn1-spec": "application/octet-stream"},
    ".ent": {"chemical/x-ncbi-asn1-ascii": "application/octet-stream"},
}

# Other useful mappings, added only if the extension is still unknown.
USEFUL = {
    ".tar.gz": "application/x-gtar-compressed",
    ".gz": "application/x-gzip",
    ".tbz": "application/x-gtar-compressed",
    ".tar.bz2": "application/x-gtar-compressed",
    ".bz2": "application/x-bzip",
    ".log": "text/plain",
    ".conf": "text/plain",
    ".spec": "text/plain",
    "README": "text/plain",
    "Makefile": "text/x-makefile",
}

# Same line syntax as the perl script:
#   /^([a-z0-9\/+.-]+)\s+((?:[a-z0-9+.-]+[ ]?)+)$/i
# (the extension list is written without nested quantifiers to avoid
# catastrophic backtracking; it matches exactly the same strings).
_BLANK_RE = re.compile(r"\w*", re.ASCII)
_LINE_RE = re.compile(
    r"([a-z0-9/+.-]+)\s+([a-z0-9+.-]+(?: [a-z0-9+.-]+)* ?)", re.ASCII | re.I
)

HEADER = """\
# created by conf/make-mime-types.py (port of Debian's create-mime.conf.pl)
# from {source}; regenerate instead of editing by hand:
#   python3 conf/make-mime-types.py /etc/mime.types > conf/mime-types.conf

#######################################################################
##
##  MimeType handling
## -------------------
##
## https://redmine.lighttpd.net/projects/lighttpd/wiki/Mimetype_assignDetails

##
## mimetype.xattr-name
## Set the extended file attribute name used to obtain mime type
## (must also set mimetype.use-xattr = "enable")
##
## Default value is "Content-Type"
##
## freedesktop.org Shared MIME-info Database specification suggests
## user-defined value ("user.mime_type") as name for extended file attribute
#mimetype.xattr-name = "user.mime_type"

##
## Use extended attribute named in mimetype.xattr-name (default "Content-Type")
## to obtain mime type if possible
##
## Disabled by default
##
#mimetype.use-xattr = "enable"

##
## mimetype ("Content-Type" HTTP header) mapping for static file handling
##
## The first matching suffix is used. If no mapping is found
## 'application/octet-stream' is used, and caching (etag/last-modified handling)
## is disabled to prevent clients from caching "unknown" mime types.
##
## Therefore the last mapping is:
##   "" => "application/octet-stream"
## This matches all extensions and acts as default mime type, and enables
## caching for those.
mimetype.assign = (
"""

FOOTER = """
	# enable caching for unknown mime types:
	"" => "application/octet-stream"
)
"""


def _is_x(mtype: str, subtype: str) -> bool:
    return mtype.startswith("x-") or subtype.startswith("x-")


class MimeTable:
    """Extension -> mime type map with create-mime.conf.pl's conflict rules."""

    def __init__(self, verbose: bool = False) -> None:
        self.extensions: dict[str, str] = {}
        self.lcext: dict[str, str] = {}  # lower-cased ext -> ext as stored
        self.verbose = verbose

    def _set(self, ext: str, mimetype: str) -> None:
        self.extensions[ext] = mimetype
        self.lcext[ext.lower()] = ext

    def add(self, ext: str, mimetype: str) -> str:
        """Add one mapping; returns the (possibly overridden) mime type.

        The perl ``add`` assigns the override to its ``$_[1]``, which aliases
        the caller's variable: a manual override applied to the first
        extension of a mime.types line also applies to the rest of that line
        (``audio/x-pn-realaudio ra rm ram`` makes .rm and .ram
        ``audio/x-realaudio`` too).  The return value reproduces that.
        """
        # lighttpd maps extensions case-insensitively; keep the first case seen
        ext = self.lcext.get(ext.lower(), ext)
        have = self.extensions.get(ext)

        resolve = MANUAL_CONFLICTS_RESOLVE.get(ext)
        if resolve and resolve.get(mimetype):
            mimetype = resolve[mimetype]

        if not have:
            self._set(ext, mimetype)
        else:
            self._resolve(ext, have, mimetype)
        return mimetype

    def _resolve(self, ext: str, have: str, mimetype: str) -> None:
        """``ext`` is already mapped to ``have``; decide about ``mimetype``."""
        # application/octet-stream means a conflict could not be resolved
        if have == mimetype or have == "application/octet-stream":
            return

        have_type, _, have_subtype = have.partition("/")
        mtype, _, subtype = mimetype.partition("/")

        # entries without x- prefix in type/subtype win
        have_x = _is_x(have_type, have_subtype)
        x = _is_x(mtype, subtype)
        if have_x and not x:
            self._set(ext, mimetype)
            return
        if x and not have_x:
            return

        # text/ wins over application/ for the same subtype
        if subtype == have_subtype:
            if mtype == "text" and have_type == "application":
                self._set(ext, mimetype)
                return
            if have_type == "text" and mtype == "application":
                return

        # non-vnd.* subtype wins over vnd.* subtype
        have_vnd = have_subtype.startswith("vnd.")
        vnd = subtype.startswith("vnd.")
        if vnd != have_vnd:
            if have_vnd:
                self._set(ext, mimetype)
            return

        if self.verbose and not vnd:
            print(
                f"Duplicate mimetype: '{ext}' => '{mimetype}' "
                f"(already have '{have}'), merging to 'application/octet-stream'",
                file=sys.stderr,
            )
        self._set(ext, "application/octet-stream")

    def read_mime_types(self, text: str) -> None:
        for line in text.split("\n"):
            line = line.split("#", 1)[0]
            if _BLANK_RE.fullmatch(line):
                continue
            m = _LINE_RE.fullmatch(line)
            if m:
                mimetype = m.group(1)
                for ext in m.group(2).split(" "):
                    if ext:  # perl's split drops the trailing empty field
                        mimetype = self.add("." + ext, mimetype)

    def add_extras(self) -> None:
        # missing in mime.types; from the IANA media types registry
        self.add(".dtd", "application/xml-dtd")
        # RFC 9239
        self.add(".js", "text/javascript")
        self.add(".mjs", "text/javascript")
        for ext, mimetype in USEFUL.items():
            if not self.extensions.get(ext):
                self.add(ext, mimetype)

    def render(self, source: str) -> str:
        def mimecmpvalue(mimetype: str) -> str:
            # sort "x-" and "vnd." prefixed names after everything else
            return re.sub(r"(^|/)(x-|vnd\.)", r"~\1\2", mimetype)

        # the first matching suffix wins, so sort by number of dots first
        # ("README"/"Makefile" are assumed not to be a suffix of anything)
        keys = sorted(
            self.extensions,
            key=lambda e: (-e.count("."), mimecmpvalue(self.extensions[e]), e),
        )
        out = [HEADER.format(source=source)]
        for ext in keys:
            mimetype = self.extensions[ext]
            if mimetype.startswith("text/") and mimetype[5:] in TEXT_UTF8:
                mimetype += ";charset=utf-8"
            out.append(f'\t"{ext}" => "{mimetype}",\n')
        out.append(FOOTER)
        return "".join(out)


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    paths = [a for a in argv if a != "-v"]
    if len(paths) > 1 or any(p in ("-h", "--help") for p in paths):
        print(__doc__, file=sys.stderr)
        return 2
    path = paths[0] if paths else "/etc/mime.types"
    try:
        # latin-1 round-trips any byte, like perl reading without a layer
        with open(path, encoding="latin-1", newline="") as f:
            text = f.read()
    except OSError as e:
        print(f"Can't open {path}: {e.strerror}", file=sys.stderr)
        return 1
    table = MimeTable(verbose=verbose)
    table.read_mime_types(text)
    table.add_extras()
    sys.stdout.write(table.render(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
