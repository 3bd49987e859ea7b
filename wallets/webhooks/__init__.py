"""Webhooks: endpoints, and the delivery of every outbox event to each subscribed endpoint.

`rules` is pure (topics, URLs, secrets, the retry schedule); `store` keeps endpoints and
deliveries in PostgreSQL at READ COMMITTED, off the wallet write path. The HTTP side (signing,
sending) lives in api/webhooks.py.
"""
