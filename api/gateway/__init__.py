"""The metering gateway: OpenAI- and Anthropic-compatible routes (`/openai/v1/...`,
`/anthropic/v1/messages`) that meter every call on the ledger. See api.gateway.proxy."""
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


__all__ = ["MOUNTS", "Gateway", "routes"]
