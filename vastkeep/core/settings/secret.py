"""``Secret``: a token or key that cannot reach a log line, a repr, a task argument or an exception by
accident."""

from __future__ import annotations

import hmac
from typing import NoReturn, SupportsIndex


class Secret:
    """A secret string: shows as ``'***'`` everywhere; ``.reveal()`` is the one way to read it.

    Not a ``str`` subclass on purpose: ``json.dumps`` and pickling refuse it, so a secret cannot
    slip into a Celery message or a stored record unnoticed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a Secret needs a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The real value: call it only at the point of use (an HTTP header, an SSH login)."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; pass .reveal() explicitly where that is intended")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


__all__ = ["Secret"]
