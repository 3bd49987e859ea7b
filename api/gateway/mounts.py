"""The gateway's mounts in the app, one per provider."""
from __future__ import annotations

from typing import Any

from litestar.handlers import asgi

from api.gateway.proxy import Gateway

MOUNTS = {"openai": "/openai/v1", "anthropic": "/anthropic"}


def routes(gateway: Gateway) -> list[Any]:
    """The gateway's mounts, one per provider (each serves its provider's paths under it)."""
    return [asgi(prefix, is_mount=True, name=f"gateway-{provider}", include_in_schema=False,
                 copy_scope=False)(
        gateway.asgi(provider, prefix)) for provider, prefix in MOUNTS.items()]

