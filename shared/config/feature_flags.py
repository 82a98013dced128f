"""server.feature-flags: lighttpd's table of switches read by name where they act
(`config_feature_bool` / `config_feature_int` in lighttpd), each with its own default."""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"enable", "enabled", "true", "1"})
FALSE_WORDS = frozenset({"disable", "disabled", "false", "0"})


def _flag(settings: dict, name: str) -> Any:
    flags = settings.get("server.feature-flags")
    return None if flags is None else flags.get(name)


def flag_bool(settings: dict, name: str, default: bool) -> bool:
    """A switch: lighttpd's words for on and off, an integer; anything else (or no
    value) is the default, as lighttpd reads it."""
    return value_bool(_flag(settings, name), default)


def value_bool(value: Any, default: bool) -> bool:
    """A config value as lighttpd's config_plugin_value_tobool reads it: its words for
    on and off, an integer; anything else is the default."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        word = value.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return default


def flag_int(settings: dict, name: str, default: int) -> int:
    """A number: an integer, or a string that is one; else the default."""
    value = _flag(settings, name)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    return default
