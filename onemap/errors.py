"""One exception root for the whole project.

Messages name the step, the field and the bad value; never a secret or a phone number.
"""

from __future__ import annotations


class OneMapError(Exception):
    """Root of every error OneMap raises on purpose."""


class ConfigError(OneMapError):
    """A settings, rule, roster or registry file is invalid.

    ``path``, ``line`` and ``field`` point at the fault so the operator can fix it.
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.detail = message
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
        if field is not None:
            where = f"{where}: {field}" if where else field
        super().__init__(f"{where}: {message}" if where else message)


class InputRejected(OneMapError):
    """A feed record cannot be used; it goes to the dead-letter topic with ``reason``.

    ``reason`` is a short stable code (a Prometheus label value), ``detail`` the human text.
    """

    def __init__(self, reason: str, detail: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        super().__init__(f"{reason}: {detail}")


class LocateError(OneMapError):
    """Coordinates that cannot be located at all (NaN, infinite, out of range)."""


class ComponentError(OneMapError):
    """An embedded or external component (broker, Redis, port) is not usable; says what to do."""
