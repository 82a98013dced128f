"""mod_status: lighttpd's status pages, for the whole server rather than one worker.

Whichever worker gets the request reads the master's stats segment (every live slot
plus the retired slot, through `shared.metrics.Snapshot`), so every worker gives the
same answer.  `status.status-url` answers in lighttpd's forms: the HTML page, `?auto`
(Apache's `Key: value` lines), `?json` / `?jsonp=NAME`; and in the Prometheus /
OpenMetrics text format when asked with `?format=prometheus` or by an Accept header
such as Prometheus sends.  `status.config-url` lists the loaded modules,
`status.statistics-url` the `key: value` pairs modules put in `shared.metrics.STATISTICS`
and the gateway backends' counters of the whole server under lighttpd's names
(`gw.backend.<label>.<proc>.load` ...), in lighttpd's order (shorter keys first).

Where lighttpd's page lists connections, this one lists workers (one row per process),
and the scoreboard is built from each worker's reading / writing / waiting counts as of
its last heartbeat (at most a second old).
"""

from __future__ import annotations

import html
import platform
import re
import time
from typing import cast

from shared.config.core_directives import event_handler_in_use
from shared.config.directives import Directive, Type
from shared.metrics import (STATE_NAMES, STATISTICS, SegmentCollector, Snapshot,
                            accepts_metrics, exposition, gateway_statistics)
from shared.stats import Field, State, StatsSegment

from ..module import HandlerResult, Module as BaseModule
from ..request import Request

DIRECTIVES = (
    Directive("status.status-url", Type.STRING, "", doc="URL of the status page"),
    Directive("status.config-url", Type.STRING, "", doc="URL of the config page"),
    Directive("status.statistics-url", Type.STRING, "",
              doc="URL of the module statistics (key: value lines)"),
    Directive("status.enable-sort", Type.BOOL, True,
              doc="client-side sorting of the worker table"),
)

_JSONP = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_FORMAT_PROMETHEUS = re.compile(r"(?:^|&)format=(?:prometheus|openmetrics)(?:&|$)")

# lighttpd's XHTML preamble (as 1.4.69 sends it) and the styles of its status page
_XHTML_HEAD = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    " <head>\n"
    "  <title>Status</title>\n"
)
_STYLE = (
    '  <style type="text/css">\n'
    "    table.status { border: black solid thin; }\n"
    "    td { white-space: nowrap; }\n"
    "    td.int { background-color: #f0f0f0; text-align: right }\n"
    "    td.string { background-color: #f0f0f0; text-align: left }\n"
    "    th.status { background-color: black; color: white; font-weight: bold; }\n"
    "    a.sortheader { background-color: black; color: white; font-weight: bold; "
    "text-decoration: none; display: block; }\n"
    "    span.sortarrow { color: white; text-decoration: none; }\n"
    "  </style>\n"
)
# lighttpd's table sorter: a click on a header sorts the rows by that column
_SORT_SCRIPT = """<script type="text/javascript">
// <!--
var sort_column;
var prev_span = null;
function get_inner_text(el) {
 if((typeof el == 'string')||(typeof el == 'undefined'))
  return el;
 if(el.innerText)
  return el.innerText;
 else {
  var str = "";
  var cs = el.childNodes;
  var l = cs.length;
  for (i=0;i<l;i++) {
   if (cs[i].nodeType==1) str += get_inner_text(cs[i]);
   else if (cs[i].nodeType==3) str += cs[i].nodeValue;
  }
 }
 return str;
}
function sortfn(a,b) {
 var at = get_inner_text(a.cells[sort_column]);
 var bt = get_inner_text(b.cells[sort_column]);
 if (a.cells[sort_column].className == 'int') {
  return parseInt(at)-parseInt(bt);
 } else {
  aa = at.toLowerCase();
  bb = bt.toLowerCase();
  if (aa==bb) return 0;
  else if (aa<bb) return -1;
  else return 1;
 }
}
function resort(lnk) {
 var span = lnk.childNodes[1];
 var table = lnk.parentNode.parentNode.parentNode.parentNode;
 var rows = new Array();
 for (j=1;j<table.rows.length;j++)
  rows[j-1] = table.rows[j];
 sort_column = lnk.parentNode.cellIndex;
 rows.sort(sortfn);
 if (prev_span != null) prev_span.innerHTML = '';
 if (span.getAttribute('sortdir')=='down') {
  span.innerHTML = '&uarr;';
  span.setAttribute('sortdir','up');
  rows.reverse();
 } else {
  span.innerHTML = '&darr;';
  span.setAttribute('sortdir','down');
 }
 for (i=0;i<rows.length;i++)
  table.tBodies[0].appendChild(rows[i]);
 prev_span = span;
}
// -->
</script>
"""
# scoreboard letters of lighttpd, in the order its legend lists them
_LEGEND = (("k", "keep-alive"), (".", "connect"), ("r", "read"), ("W", "write"))
# the worker table: (heading, css class)
_COLUMNS = (("Slot", "int"), ("PID", "int"), ("Generation", "int"), ("State", "string"),
            ("Connections", "int"), ("Requests", "int"), ("Read", "int"),
            ("Written", "int"), ("RSS", "int"), ("CPU (s)", "int"), ("FDs", "int"),
            ("Threads", "int"), ("Heartbeat age (s)", "int"))


def multiplier(value: float, base: int) -> str:
    """lighttpd's mod_status_get_multiplier: `8  req`, `4.61 kbyte`."""
    unit = " "
    for prefix in "kMGTPEZY":
        if value <= base:
            break
        value /= base
        unit = prefix
    number = str(int(value)) if base == 1000 else f"{value:.2f}"
    return f"{number} {unit}"


def uptime_text(seconds: int) -> str:
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    mins, seconds = divmod(seconds, 60)
    text = f"{days} days " if days else ""
    text += f"{hours} hours " if hours else ""
    text += f"{mins} min " if mins else ""
    return f"{text}{seconds} s"


class Board:
    """The scoreboard: one letter per open connection, worker after worker, then `_`
    for each connection the workers could still take."""

    def __init__(self, snap: Snapshot, capacity: int) -> None:
        self.letters: list[str] = []
        self.counts = dict.fromkeys((letter for letter, _ in _LEGEND), 0)
        for _, words in snap.ordered_workers():
            reading, writing = words[Field.READING], words[Field.WRITING]
            waiting = words[Field.WAITING]
            other = max(words[Field.ACTIVE] - reading - writing - waiting, 0)
            for letter, count in (("r", reading), ("W", writing), ("k", waiting),
                                  (".", other)):
                self.letters.append(letter * count)
                self.counts[letter] += count
        self.busy = sum(self.counts.values())
        self.idle = max(capacity * len(snap.workers) - self.busy, 0)

    def text(self) -> str:
        return "".join(self.letters)


class Module(BaseModule):
    name = "status"
    replay_safe = True
    directives = DIRECTIVES

    def __init__(self, config, services=None) -> None:
        super().__init__(config, services)
        self.collector = SegmentCollector()

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        values = request.settings.values
        path = request.uri_path
        if not path:
            return None
        if path == values["status.status-url"]:
            return self.server_status(request, values)
        if path == values["status.config-url"]:
            return self.server_config(request, values)
        if path == values["status.statistics-url"]:
            return self.server_statistics(request)
        return None

    # ------------------------------------------------------------ responses
    @staticmethod
    def _answer(request: Request, content_type: str, body: bytes) -> int:
        response = request.response
        response.set_header("Content-Type", content_type)
        response.write(body)
        return 200

    def server_status(self, request: Request, values: dict) -> int:
        services = self.services
        assert services is not None      # a worker's module: services are given
        if StatsSegment.current is None:
            return 503                 # the -1 mode: no master, no segment
        services.counters.publish()   # this worker's round so far, counted too
        services.publish_states(request.connection)   # its connections now, this one too
        query = request.uri_query
        accept = request.headers.get("accept")
        if _FORMAT_PROMETHEUS.search(query) or (
                not query.startswith(("auto", "json")) and accepts_metrics(accept)):
            body, content_type = exposition(self.collector, accept)
            request.response.add_header("Vary", "Accept")
            return self._answer(request, content_type, body)
        snap = Snapshot(StatsSegment.current)
        # each worker's limit, as worker.server.connection_limit derives it
        board = Board(snap, services.max_connections)
        if query == "auto":
            return self._answer(request, "text/plain", auto_text(snap, board).encode())
        if query.startswith("json"):
            rates = StatsSegment.current.recent_rates()
            return self._answer(request, "application/javascript",
                                json_text(snap, board, rates, query).encode())
        request.response.add_header("Vary", "Accept")
        page = html_page(request, values, snap, board, StatsSegment.current.recent_rates())
        return self._answer(request, "text/html", page.encode("utf-8", "replace"))

    def server_config(self, request: Request, values: dict) -> int:
        services = self.services
        assert services is not None      # a worker's module: services are given
        settings = services.config.settings
        names = "<br />".join(html.escape(type(m).name or type(m).__module__)
                              for m in services.modules)
        live = len(StatsSegment.current.live_slots()) if StatsSegment.current else 1
        rows = [("Server-Features", None), ("RegEx Conditionals", "enabled"),
                ("Network Engine", None),
                ("fd-Event-Handler", event_handler_in_use(settings["server.event-handler"])),
                ("Workers", f"{settings['server.max-worker']} (server.max-worker); "
                            f"{live} running"),
                ("Python", html.escape(platform.python_version())),
                ("Config-File-Settings", None), ("Loaded Modules", names)]
        parts = [_XHTML_HEAD, " </head>\n <body>\n"]
        if values["server.tag"]:
            parts.append(f"  <h1>{html.escape(values['server.tag'])}  </h1>\n")
        parts.append('  <table summary="status" border="1">\n')
        for key, value in rows:
            if value is None:
                parts.append(f'   <tr>\n    <th colspan="2">{key}</th>\n   </tr>\n')
            else:
                parts.append(f"   <tr>\n    <td><b>{key}</b></td>\n    <td>{value}</td>\n"
                             "   </tr>\n")
        parts.append("  </table>\n </body>\n</html>\n")
        return self._answer(request, "text/html", "".join(parts).encode())

    def server_statistics(self, request: Request) -> int:
        items = statistics_items()
        request.response.set_header("Content-Type", "text/plain")
        if not items:
            return 204                 # lighttpd: nothing to send
        body = "".join(f"{key}: {value}\n" for key, value in items)
        return self._answer(request, "text/plain", body.encode())


# ------------------------------------------------------------------ renderers
def statistics_items() -> list[tuple[str, int]]:
    """This process's module statistics and the whole server's backend counters, in
    the order of lighttpd's plugin_stats array (by key length, then bytes)."""
    values = dict(STATISTICS.items())
    if StatsSegment.current is not None:
        for key, value in gateway_statistics(Snapshot(StatsSegment.current).backends).items():
            values[key] = values.get(key, 0) + value
    return sorted(values.items(), key=lambda item: (len(item[0]), item[0]))


def auto_text(snap: Snapshot, board: Board) -> str:
    """`?auto`, as lighttpd writes it (Apache's machine-readable form)."""
    return (f"Total Accesses: {snap.requests()}\n"
            f"Total kBytes: {snap.total(Field.BYTES_OUT) // 1024}\n"
            f"Uptime: {snap.uptime}\n"
            f"BusyServers: {board.busy}\n"
            f"IdleServers: {board.idle}\n"
            f"Scoreboard: {board.text()}{'_' * board.idle}\n")


def json_text(snap: Snapshot, board: Board, rates: tuple[float, float],
              query: str) -> str:
    """`?json`, as lighttpd writes it; lighttpd wraps it in `NAME(...);` only when the
    query starts with `jsonp=NAME` (so `?json&jsonp=NAME` stays plain JSON)."""
    body = ("{\n"
            f'\t"RequestsTotal": {snap.requests()},\n'
            f'\t"TrafficTotal": {snap.total(Field.BYTES_OUT) // 1024},\n'
            f'\t"Uptime": {snap.uptime},\n'
            f'\t"BusyServers": {board.busy},\n'
            f'\t"IdleServers": {board.idle},\n'
            f'\t"RequestAverage5s":{int(rates[0])},\n'
            f'\t"TrafficAverage5s":{int(rates[1]) // 1024}\n'
            "}")
    if query.startswith("jsonp="):
        name = query[6:]
        if _JSONP.fullmatch(name):
            return f"{name}({body});"
    return body


def _sort_header(title: str, sort: bool) -> str:
    if sort:
        return ('<th class="status"><a href="#" class="sortheader" '
                f'onclick="resort(this);return false;">{title}'
                '<span class="sortarrow">:</span></a></th>\n')
    return f'<th class="status">{title}</th>\n'


def _row(cells: list[tuple[object, str]]) -> str:
    return "<tr>" + "".join(f'<td class="{kind}">{value}</td>'
                            for value, kind in cells) + "</tr>\n"


def html_page(request: Request, values: dict, snap: Snapshot, board: Board,
              rates: tuple[float, float]) -> str:
    sort = values["status.enable-sort"]
    query = request.uri_query
    parts = [_XHTML_HEAD, _STYLE]
    if query.startswith("refresh="):
        digits = re.match(r"\d+", query[8:])
        if digits and int(digits.group()) > 0:
            parts.append(f'<meta http-equiv="refresh" '
                         f'content="{min(int(digits.group()), 604800)}">\n')
    if sort:
        parts.append(_SORT_SCRIPT)
    parts.append(" </head>\n<body>\n<h1>Server-Status")
    if values["server.tag"]:
        parts.append(f" ({html.escape(values['server.tag'])})")
    uptime = snap.uptime
    since = max(uptime, 1)
    requests, traffic = snap.requests(), snap.total(Field.BYTES_OUT)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.start_time))
    parts.append(
        '</h1><table summary="status" class="status">'
        f'<tr><td>Hostname</td><td class="string">{html.escape(request.host)}</td></tr>\n'
        f'<tr><td>Uptime</td><td class="string">{uptime_text(uptime)}</td></tr>\n'
        f'<tr><td>Started at</td><td class="string">{started}</td></tr>\n'
        '<tr><th colspan="2">absolute (since start)</th></tr>\n'
        f'<tr><td>Requests</td><td class="string">{multiplier(requests, 1000)}req</td></tr>\n'
        f'<tr><td>Traffic</td><td class="string">{multiplier(traffic, 1024)}byte</td></tr>\n'
        '<tr><th colspan="2">average (since start)</th></tr>\n'
        '<tr><td>Requests</td><td class="string">'
        f'{multiplier(requests / since, 1000)}req/s</td></tr>\n'
        '<tr><td>Traffic</td><td class="string">'
        f'{multiplier(traffic / since, 1024)}byte/s</td></tr>\n'
        '<tr><th colspan="2">average (5s sliding average)</th></tr>\n'
        f'<tr><td>Requests</td><td class="string">{multiplier(rates[0], 1000)}req/s</td></tr>\n'
        f'<tr><td>Traffic</td><td class="string">{multiplier(rates[1], 1024)}byte/s</td></tr>\n'
        "</table>\n<hr />\n<pre>\n")
    letters = board.text()
    lines = "\n".join(letters[i:i + 50] for i in range(0, len(letters), 50))
    parts.append(f"<b>{board.busy} connections</b>\n{lines}\n\n<table>\n")
    for letter, meaning in _LEGEND:
        parts.append(f'<tr><td style="text-align:right">{board.counts[letter]}</td>'
                     f"<td>&nbsp;&nbsp;{html.escape(letter)} = {meaning}</td></tr>\n")
    parts.append('</table>\n</pre><hr />\n<h2>Workers</h2>\n'
                 '<table summary="status" class="status">\n<tr>')
    parts.extend(_sort_header(title, sort) for title, _ in _COLUMNS)
    parts.append("</tr>\n")
    for index, words in snap.ordered_workers():
        values_row = (index, words[Field.PID], words[Field.GENERATION],
                      STATE_NAMES.get(cast(State, words[Field.STATE]), str(words[Field.STATE])),
                      words[Field.ACTIVE], Snapshot.worker_requests(words),
                      words[Field.BYTES_IN], words[Field.BYTES_OUT],
                      words[Field.RSS], f"{words[Field.CPU_MS] / 1000:.2f}",
                      words[Field.FDS], words[Field.THREADS],
                      f"{snap.heartbeat_age(words):.1f}")
        parts.append(_row([(value, kind) for value, (_, kind) in zip(values_row, _COLUMNS)]))
    parts.append("</table>\n</body>\n</html>\n")
    return "".join(parts)
