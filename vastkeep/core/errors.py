"""The error tree.

One root, a transient branch (retry it) and a permanent branch (never retry it), so a task
maps any library error to retry / no-retry with one ``isinstance`` check (dramatiq's
``errors.py``). Errors carry data, not just prose, and never a secret.
"""

from __future__ import annotations


class VastkeepError(Exception):
    """Root of every error the library raises on purpose."""

    def __init__(self, message: str = "", **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        for key, value in data.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe description, for task results and the admin API."""
        out: dict[str, object] = {"error": type(self).__name__, "message": self.message}
        plain = (str, int, float, bool, type(None))
        out.update({k: v for k, v in self.data.items() if isinstance(v, plain)})
        return out


# ── configuration ────────────────────────────────────────────────────────────
class ConfigError(VastkeepError):
    """A setting is missing or malformed: start-up stops and names the variable."""


# ── transient: retry with backoff ───────────────────────────────────────────
class TransientError(VastkeepError):
    """Worth retrying: the same call may succeed later. May carry ``delay_s`` (a hint)."""


class NetworkError(TransientError):
    """Connection refused/reset, DNS failure, or a timeout on the way to a service."""


class RateLimited(TransientError):
    """The provider said 429 (Vast.ai sends no Retry-After)."""


class ServerError(TransientError):
    """The provider answered 5xx."""


class MalformedResponse(TransientError):
    """The provider answered something we cannot parse: logged and retried, never a crash loop."""


class RecordMissing(MalformedResponse):
    """A 200 answer that holds no record where one belongs (``{"instances": null}`` on show): unknown, never
    "not found". Vast.ai answers it for a destroyed instance, and now and then for a live one."""


class SSHError(TransientError):
    """SSH connect/auth/channel failed or the peer went silent (missed keepalives)."""


class ProbeFailed(TransientError):
    """A port or ComfyUI probe did not pass; the next poll tries again."""


class LeaseBusy(TransientError):
    """Someone else holds the lease right now."""


class WriteConflict(TransientError):
    """A compare-and-set write kept losing to concurrent writers; try again shortly."""


# ── permanent: never retry ──────────────────────────────────────────────────
class PermanentError(VastkeepError):
    """Retrying cannot help: fix the input or the configuration."""


class AuthError(PermanentError):
    """The token/key was rejected (401/403)."""


class TokenInvalid(AuthError):
    """A token failed validation; carries ``service``."""


class InvalidInput(PermanentError):
    """A caller's input (admin body, task argument) is malformed; carries ``field``, never the value."""


class NotFound(PermanentError):
    """The instance/offer is gone (e.g. Vast's ``no_such_instance``)."""


class InvalidRequest(PermanentError):
    """The provider refused the request as malformed (4xx other than 401/403/404/429)."""


class RentOutcomeUnknown(PermanentError):
    """A rent request reached Vast.ai but its answer could not be read: an instance may exist now.

    Permanent on purpose: retrying would rent (and pay for) a second instance. Carries ``offer_id``
    and ``label``; look the label up with ``VastClient.list_instances`` before renting again.
    """


class LeaseLost(PermanentError):
    """The lease expired or passed to another owner: this holder must stop."""


class StaleFence(LeaseLost):
    """A write carried a fencing number older than the current grant: refused."""


class LeaseBroken(PermanentError):
    """A client lease's instance is being destroyed (it died or was replaced): take a new lease."""


class UnsafeTarget(PermanentError):
    """A probe target is not one the provider reported, or is loopback/private outside simulation."""


class SafeModeActive(PermanentError):
    """Spending is stopped: safe mode is on."""


class StackError(PermanentError):
    """``vastkeep up`` cannot start the stack: the message says what to change (a port, a running stack)."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same call may help."""
    return isinstance(exc, TransientError)
