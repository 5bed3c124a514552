"""HuggingFace ``GET /api/whoami-v2`` and Civitai ``GET /api/v1/me``, with their real 200/401 shapes.

The Bearer check itself happens in the simulator's middleware against :class:`TokenBook`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from vastkeep.sim.core import Simulator


def unauthorized(service: str) -> web.Response:
    """The 401 each provider sends for a missing or bad key."""
    if service == "hf":
        return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
    if service == "civitai":
        return web.json_response({"error": "Unauthorized"}, status=401)
    return web.Response(  # Vast.ai's JSON carries no charset (its CLI compares the header exactly)
        body=b'{"success": false, "error": "invalid_user_key", "msg": "Invalid user key"}',
        status=401,
        headers={"Content-Type": "application/json"},
    )


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register the token-check routes."""

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "type": "user",
                "id": "65f0c0ffee0000000000beef",
                "name": "vastkeep-sim",
                "fullname": "Simulated User",
                "email": None,
                "emailVerified": False,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "vastkeep-sim",
                        "role": "read",
                        "createdAt": "2026-01-01T00:00:00.000Z",
                    },
                },
            }
        )

    async def me(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": 1,
                "username": "vastkeep-sim",
                "tier": "free",
                "status": "active",
                "isMember": False,
                "subscriptions": [],
            }
        )

    app.router.add_get("/api/whoami-v2", whoami)
    app.router.add_get("/api/v1/me", me)
