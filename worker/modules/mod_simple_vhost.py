"""mod_simple_vhost: the document root is server-root + host + document-root.

As lighttpd 1.4.69: the host is the request's (lowercased, its port cut off); when that
directory does not exist the default host's is tried (or, without a default host,
server-root + document-root), and when neither exists the request keeps
`server.document-root`.  The host whose directory is used becomes the backends'
SERVER_NAME.  An empty `simple-vhost.server-root` turns the module off.
`simple-vhost.debug` logs each directory that is not there.
"""

from __future__ import annotations

import os

from shared import log
from shared.config.directives import Directive, Type

from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..vhost import append_path, directory_errno, without_port


def _with_slash(path: str) -> str:
    return path if not path or path.endswith("/") else path + "/"


DIRECTIVES = (
    Directive("simple-vhost.server-root", Type.STRING, "", convert=_with_slash),
    Directive("simple-vhost.default-host", Type.STRING, ""),
    Directive("simple-vhost.document-root", Type.STRING, "", convert=_with_slash),
    Directive("simple-vhost.debug", Type.SHORT, 0),
)


def docroot_path(server_root: str, host: str, document_root: str) -> str:
    path = server_root + without_port(host)
    return append_path(path, document_root) if document_root else _with_slash(path)


class Module(BaseModule):
    name = "simple_vhost"
    replay_safe = True      # the docroot follows from Host and the directories there
    directives = DIRECTIVES

    def handle_docroot(self, request: Request) -> HandlerResult:
        values = request.settings.values
        server_root = values["simple-vhost.server-root"]
        if not server_root:
            return None
        document_root = values["simple-vhost.document-root"]
        debug = values["simple-vhost.debug"]
        hosts = [request.host] if request.host else []
        hosts.append(values["simple-vhost.default-host"])     # "": no host at all
        for host in hosts:
            path = docroot_path(server_root, host, document_root)
            missing = directory_errno(path)
            if not missing:
                request.docroot = path
                if host and not (request.env and "SERVER_NAME" in request.env):
                    request.set_env("SERVER_NAME", without_port(host))
                return None
            if debug:
                log.error("mod_simple_vhost.c.164", f"{path}: {os.strerror(missing)}")
        return None
