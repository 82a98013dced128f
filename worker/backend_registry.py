"""Backends found by name, as lighttpd's frameworks find theirs (http_vhostdb_backend_get
and the like): a backend module declares the names it answers to when it is imported,
so the config check knows them, and registers the object that answers when the worker
builds it; the module that asks never names one."""

from __future__ import annotations

from typing import Generic, TypeVar

Backend = TypeVar("Backend")


class Registry(Generic[Backend]):
    """The names declared and the backends registered for one framework."""

    def __init__(self) -> None:
        self.declared: set[str] = set()
        self.registered: dict[str, Backend] = {}

    def declare(self, name: str) -> None:
        self.declared.add(name)

    def is_declared(self, name: str) -> bool:
        return name in self.declared

    def register(self, name: str, backend: Backend) -> None:
        self.registered[name] = backend

    def get(self, name: str) -> Backend | None:
        return self.registered.get(name)
