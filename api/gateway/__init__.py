"""The metering gateway: OpenAI- and Anthropic-compatible routes (`/openai/v1/...`,
`/anthropic/v1/messages`) that meter every call on the ledger. See api.gateway.proxy, and
api.gateway.mounts for its place in the app.

Nothing is imported here: `api.settings` reads `api.gateway.config`, and a worker process must
set up its metrics (PROMETHEUS_MULTIPROC_DIR) before anything imports prometheus_client.
"""
