"""pricing.tokens' lock at a fork (review of 3124a0a, the same defect as new_id's): held by another
thread loading an encoding (the SDK's TokenCounter, a gateway worker's first count), it stayed held
in a forked child forever, whose first load_encoding or clear_encoding_cache hung."""

from __future__ import annotations

import os

from pricing import tokens
from tests.forked import exit_code_of


def test_a_child_forked_while_another_thread_holds_the_encodings_lock_still_takes_it():
    with tokens._LOCK:
        pid = os.fork()
        if pid == 0:  # the child: take the lock, exit 0 (a hang never gets here)
            tokens.clear_encoding_cache()
            os._exit(0)
    assert exit_code_of(pid, "the forked child hung on the encodings lock") == 0
