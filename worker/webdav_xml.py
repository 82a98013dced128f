"""XML for WebDAV (RFC 4918): a safe parser for request bodies and the writer of
207 Multi-Status answers.

Request bodies are parsed by the standard library's expat with namespaces on; a
document type declaration (and with it every entity declaration: the billion laughs,
external entities) is refused outright, the body is bounded in size by the caller and
the element nesting here, so no body can make the parser fetch, expand or recurse
without limit.  Elements are kept as a small tree whose names are (namespace, local)
pairs; text and child elements keep their order, so a dead property's value (which
may be any XML) is stored and given back as it came, its namespaces declared where
they are used.
"""

from __future__ import annotations

from typing import Final, Iterator, Union
from xml.parsers import expat

DAV: Final = "DAV:"
MAX_DEPTH: Final = 64                # element nesting in a request body
_NS_SEPARATOR: Final = "\x01"        # expat joins namespace and local name with this

Name = tuple[str, str]        # (namespace URI, local name); "" is the null namespace


class XMLError(ValueError):
    """A request body that is not well-formed (or namespace-valid) XML, or is refused
    (a DTD, too deep): 400."""


class Element:
    """One element: its name, attributes (by Name) and content (text and elements in
    document order)."""

    __slots__ = ("name", "attrs", "content")

    def __init__(self, name: Name, attrs: dict[Name, str]) -> None:
        self.name = name
        self.attrs = attrs
        self.content: list[Union[str, "Element"]] = []

    @property
    def children(self) -> list["Element"]:
        return [item for item in self.content if isinstance(item, Element)]

    def child(self, name: Name) -> "Element | None":
        for item in self.content:
            if isinstance(item, Element) and item.name == name:
                return item
        return None

    def text(self) -> str:
        return "".join(item for item in self.content if isinstance(item, str))

    def inner_xml(self) -> str:
        """The content as XML text, each element declaring its own namespace (so it
        stands alone wherever it is put)."""
        return "".join(escape_text(item) if isinstance(item, str) else item.to_xml()
                       for item in self.content)

    def to_xml(self) -> str:
        namespace, local = self.name
        parts = [f'<{local} xmlns="{escape_attr(namespace)}"']
        for index, ((attr_ns, attr_local), value) in enumerate(self.attrs.items()):
            if attr_ns:
                parts.append(f' xmlns:a{index}="{escape_attr(attr_ns)}" '
                             f'a{index}:{attr_local}="{escape_attr(value)}"')
            else:
                parts.append(f' {attr_local}="{escape_attr(value)}"')
        if not self.content:
            return "".join(parts) + "/>"
        return "".join(parts) + ">" + self.inner_xml() + f"</{local}>"


def _split(expat_name: str) -> Name:
    namespace, _, local = expat_name.rpartition(_NS_SEPARATOR)
    return namespace, local


class _TreeBuilder:
    """expat callbacks that build the Element tree, refusing what is not data."""

    def __init__(self) -> None:
        self.root: Element | None = None
        self.stack: list[Element] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise XMLError("XML nested too deep")
        element = Element(_split(name), {_split(k): v for k, v in attrs.items()})
        if self.stack:
            self.stack[-1].content.append(element)
        else:
            self.root = element
        self.stack.append(element)

    def end(self, _name: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            content = self.stack[-1].content
            if content and isinstance(content[-1], str):
                content[-1] += text
            else:
                content.append(text)

    @staticmethod
    def refuse_dtd(*_args: object) -> None:
        raise XMLError("a document type declaration is not accepted")


def parse(data: bytes) -> Element:
    """The root element of `data`; raises XMLError."""
    builder = _TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=_NS_SEPARATOR)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = builder.refuse_dtd
    parser.EntityDeclHandler = builder.refuse_dtd
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise XMLError(str(err)) from None
    if builder.root is None:
        raise XMLError("no root element")
    return builder.root


# ------------------------------------------------------------------ writing
_TEXT_ESCAPES: Final = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
_ATTR_ESCAPES: Final = {**_TEXT_ESCAPES, ord('"'): "&quot;"}


def escape_text(text: str) -> str:
    if "&" not in text and "<" not in text and ">" not in text:
        return text                  # the usual case: looking is cheaper than translating
    return text.translate(_TEXT_ESCAPES)


def escape_attr(text: str) -> str:
    if '"' not in text:
        return escape_text(text)
    return text.translate(_ATTR_ESCAPES)


def dav_element(local: str, inner: str = "") -> str:
    """`<D:local>inner</D:local>` (the D prefix is declared on the root)."""
    return f"<D:{local}>{inner}</D:{local}>" if inner else f"<D:{local}/>"


def property_xml(name: Name, inner: str = "") -> str:
    """A property element in its own namespace: `D:` for DAV:, a declared default
    namespace for any other (the null namespace included)."""
    namespace, local = name
    if namespace == DAV:
        return dav_element(local, inner)
    declared = f'<{local} xmlns="{escape_attr(namespace)}"'
    return f"{declared}>{inner}</{local}>" if inner else f"{declared}/>"


STATUS_TEXT: Final = {200: "OK", 201: "Created", 204: "No Content", 403: "Forbidden",
                      404: "Not Found", 409: "Conflict", 412: "Precondition Failed",
                      423: "Locked", 424: "Failed Dependency", 500: "Internal Server Error",
                      502: "Bad Gateway", 507: "Insufficient Storage"}


def status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {STATUS_TEXT.get(status, '')}".rstrip()


XML_HEAD: Final = '<?xml version="1.0" encoding="utf-8"?>\n'
MULTISTATUS_OPEN: Final = XML_HEAD + '<D:multistatus xmlns:D="DAV:">\n'
MULTISTATUS_CLOSE: Final = "</D:multistatus>\n"


def _propstat_end(status: int) -> str:
    return f"</D:prop><D:status>{status_line(status)}</D:status></D:propstat>\n"


_PROPSTAT_ENDS: Final = {status: _propstat_end(status) for status in STATUS_TEXT}


def response_with_propstats(href: str, propstats: dict[int, list[str]]) -> str:
    """One `<D:response>` of a PROPFIND / PROPPATCH: the properties grouped by status."""
    parts = ["<D:response><D:href>", escape_text(href), "</D:href>\n"]
    for status, props in propstats.items():
        parts.append("<D:propstat><D:prop>")
        parts += props
        parts.append(_PROPSTAT_ENDS.get(status) or _propstat_end(status))
    parts.append("</D:response>\n")
    return "".join(parts)


def response_with_status(href: str, status: int) -> str:
    """One `<D:response>` with a status for the resource (a member that failed)."""
    return (f"<D:response><D:href>{escape_text(href)}</D:href>"
            f"<D:status>{status_line(status)}</D:status></D:response>\n")


def error_body(condition: str) -> bytes:
    """An RFC 4918 §16 `<D:error>` body naming a precondition."""
    return (XML_HEAD + f'<D:error xmlns:D="DAV:"><D:{condition}/></D:error>\n').encode()


def iter_names(prop: Element) -> Iterator[Name]:
    for child in prop.children:
        yield child.name
