"""systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

Without systemd (no NOTIFY_SOCKET) every call is a no-op, so the master can always
report READY=1 / RELOADING=1 / STOPPING=1.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1"); True if systemd was there to receive it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True
