"""Comparing answers of lighttpd 1.4.69 and pylighttpd for the module differential tests
(test_header_modules_differential.py, test_vhost_differential.py).

An answer is summed up as its status, its body and every header line, grouped by name
in the order they came (a header added twice shows twice), leaving out what differs by
nature or on purpose (IGNORED).  An expiry (`Expires`, `Cache-Control: max-age`) is turned into
the absolute time it names, the answer's Date plus max-age, and two answers agree on it
within a second: the two servers may answer either side of a second's turn.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from test_differential import exchange
from worker.http import parse_http_date

# header -> why it is not compared
IGNORED = {
    "date": "the time of the answer",
    "server": "each server's own tag",
}


def summary(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    found: dict[str, Any] = {"status": int(parts[1]) if len(parts) > 1 else 0, "body": body}
    date = parse_http_date(headers.get("date", [""])[0]) or 0.0
    for name, values in headers.items():
        if name not in IGNORED:
            found[name] = values
    found.update(_expiry(headers, date))
    return found


def _expiry(headers: dict[str, list[str]], date: float) -> dict[str, Any]:
    """The expiry an answer names, as an absolute time (an `~` entry compared with
    tolerance), in place of the header that says it."""
    found: dict[str, Any] = {}
    for value in headers.get("cache-control", []):
        if value.startswith("max-age="):
            found["cache-control"] = ["max-age"]
            found["~expiry"] = date + int(value[8:])
    if "expires" in headers:
        found["expires"] = ["a date"]
        found["~expiry"] = parse_http_date(headers["expires"][0])
    return found


def differences(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    diff = {}
    for key in theirs.keys() | ours.keys():
        a, b = theirs.get(key), ours.get(key)
        if key.startswith("~") and a is not None and b is not None and abs(a - b) <= 1:
            continue
        if a != b:
            diff[key] = (a[:200], b[:200]) if isinstance(a, bytes) and \
                isinstance(b, bytes) else (a, b)
    return diff


def compare(ports: tuple[int, int], requests: list[tuple[str, bytes]]) -> dict[str, Any]:
    """name -> how the answers differ, for the requests whose answers differ (each
    request goes to both servers at the same time)."""
    found = {}
    with ThreadPoolExecutor(2) as pool:
        for name, raw in requests:
            theirs, ours = pool.map(lambda port: summary(exchange(port, raw)), ports)
            diff = differences(theirs, ours)
            if diff:
                found[name] = diff
    return found


def get(target: str, *headers: str, host: str = "test.example", method: str = "GET",
        version: str = "1.1") -> bytes:
    """A request that closes its connection after the answer."""
    lines = [f"{method} {target} HTTP/{version}", *([f"Host: {host}"] if host else []),
             "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
