"""A database host that takes the connection and never answers (a firewall that swallows packets,
a server stuck in its start) stops a command within the pool's timeout, as the driver's words
say: "cannot reach the database", exit 3. The start's session check (two connections opened
before anything else) had no connect timeout, so `tokentill migrate` or `serve` waited on it
for ever where the pool itself gives up after TOKENTILL_POOL_TIMEOUT_SECONDS."""
from __future__ import annotations

import os
import socket
import subprocess
import sys


def test_a_database_that_never_answers_stops_the_command_within_the_pool_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; no one ever answers the startup packet
        port = silent.getsockname()[1]
        env = {**os.environ, "TOKENTILL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/tokentill",
               "TOKENTILL_POOL_TIMEOUT_SECONDS": "2"}
        try:
            done = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True,
                                  text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("migrate still waited on a database that never answers after 60 s") from None
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot reach the database: "), done.stderr
