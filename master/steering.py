"""Steer new connections to chosen sockets of a SO_REUSEPORT group.

Every worker slot has its own SO_REUSEPORT listener, and the kernel spreads new
connections over the whole group whether or not a worker accepts on a socket.  A slot
without a worker (waiting out a respawn back-off, or retired by TTOU) would leave its
share of connections waiting in its queue; closing its socket instead would reset what
already waits there (unless net.ipv4.tcp_migrate_req is on).  So the master attaches a
classic BPF program to the group that returns the index of one of the sockets that are
served, and detaches it once every socket is served again.

The kernel indexes a group's sockets in the order they started listening (and moves
the last one into a closed socket's place); the master opens a slot's socket after the
previous slot's and only ever closes the last one, so a socket's index is its slot.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Sequence

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF   # ancillary load: a random 32-bit number
_LD_W_ABS, _ALU_MOD_K, _JEQ_K, _RET_K = 0x20, 0x94, 0x15, 0x06
_TCPI_UNACKED = 24     # offset in struct tcp_info: a listener's accept queue length
_TCP_INFO_SIZE = 104


def _program(indices: Sequence[int]) -> bytes:
    """`return indices[random() % len(indices)]`: classic BPF cannot index a table, so
    the pick is compared with each position in turn (at most 2 x 256 + 1 instructions,
    far below the kernel's 4096)."""
    instructions = [(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_ALU_MOD_K, 0, 0, len(indices))]
    for position, index in enumerate(indices[:-1]):
        # equal: fall through to the return; not equal: skip it
        instructions += [(_JEQ_K, 0, 1, position), (_RET_K, 0, 0, index)]
    instructions.append((_RET_K, 0, 0, indices[-1]))
    return b"".join(struct.pack("HBBI", *instruction) for instruction in instructions)


def steer_to(sock: socket.socket, indices: Sequence[int]) -> None:
    """New connections to `sock`'s group go only to the sockets at these indices."""
    if not indices:
        raise ValueError("at least one socket must keep receiving connections")
    code = _program(indices)
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
    """Connections waiting in a listener's accept queue: for a listening socket the
    kernel reports its queue length as tcp_info's `unacked` (one system call, where
    /proc/net/tcp would be a scan of every connection)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return struct.unpack_from("I", info, _TCPI_UNACKED)[0]
