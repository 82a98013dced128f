"""Steer new connections away from the last socket of a SO_REUSEPORT group.

Closing a SO_REUSEPORT listener resets the connections waiting in its accept queue
(unless net.ipv4.tcp_migrate_req is on).  To retire a worker without that loss, the
master first attaches a classic BPF program to the group that picks a socket among the
first `keep` only; once the retiring socket's queue is drained it can be closed safely.

The kernel indexes a group's sockets in the order they were bound (and moves the last
one into a closed socket's place), so the most recently added slot is always last: the
one TTOU retires.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF   # ancillary load: a random 32-bit number
_LD_W_ABS, _ALU_MOD_K, _RET_A = 0x20, 0x94, 0x16


def _program(keep: int) -> bytes:
    """`return random() % keep`: an index into the group's first `keep` sockets."""
    instructions = [(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_ALU_MOD_K, 0, 0, keep),
                    (_RET_A, 0, 0, 0)]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in instructions)


def steer_to_first(sock: socket.socket, keep: int) -> None:
    """New connections to `sock`'s group go only to its first `keep` sockets."""
    if keep < 1:
        raise ValueError("at least one socket must keep receiving connections")
    code = _program(keep)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxQ", len(code) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def stop_steering(sock: socket.socket) -> None:
    """Back to the kernel's default spread over the whole group."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except OSError:
        pass  # ENOENT: no program was attached


def accept_queue_length(sock: socket.socket) -> int:
    """Connections waiting in a listener's accept queue (from /proc/net/tcp*)."""
    family = "tcp6" if sock.family == socket.AF_INET6 else "tcp"
    inode = _socket_inode(sock)
    with open(f"/proc/net/{family}") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[9] == inode and fields[3] == "0A":   # 0A: LISTEN
                return int(fields[4].split(":")[1], 16)     # rx_queue = accept backlog
    return 0


def _socket_inode(sock: socket.socket) -> str:
    target = os.readlink(f"/proc/self/fd/{sock.fileno()}")   # "socket:[12345]"
    return target[target.index("[") + 1:-1]
