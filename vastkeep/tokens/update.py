"""What a runtime token update answers: accepted, or refused and why (the admin API's body)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vastkeep.tokens.cache import public_result
from vastkeep.tokens.checks import TokenResult

MAX_TOKEN_BYTES = 4096


class UpdateRefusal(StrEnum):
    """Why a runtime token update was refused: the provider said 401/403, or could not be reached."""

    REJECTED = "rejected"
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class TokenUpdate:
    """What happened to a runtime token update: ``accepted`` or refused (``reason`` says why)."""

    service: str
    accepted: bool
    validation: TokenResult
    reason: UpdateRefusal | None = None  # None: accepted
    forced: bool = False

    def to_dict(self) -> dict[str, object]:
        """The admin API body (never the token)."""
        out: dict[str, object] = {"success": self.accepted, "service": self.service,
                               "validation": public_result(self.validation)}
        if self.forced:
            out["forced"] = True
        if self.reason == UpdateRefusal.REJECTED:
            out["error"] = f"token rejected by {self.service} ({self.validation.get('httpStatus', '?')})"
        elif self.reason == UpdateRefusal.UNVERIFIED:
            out["error"] = (f"token could not be validated ({self.validation.get('error')}); "
                            "old token kept, send \"force\": true to store it anyway")
        return out


__all__ = ["MAX_TOKEN_BYTES", "TokenUpdate", "UpdateRefusal"]
