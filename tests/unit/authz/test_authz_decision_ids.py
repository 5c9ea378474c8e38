"""Decision ids: 128 random bits each, never repeated, not even by a forked worker."""

from __future__ import annotations

import os

from authz_service.stages import decide
from authz_service.stages.decide import RandomIds


def test_ids_are_128_bit_hex_and_distinct_past_a_pool_refill() -> None:
    ids = RandomIds()
    drawn = [ids.next_hex() for _ in range(1000)]  # about four pools
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    """A pool copied into a forked child (workers are exec'd, but any fork) would repeat ids."""
    first = decide._decision_ids.next_hex()  # the parent's pool is now filled
    assert first
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only reports its ids
        os.close(reader)
        os.write(writer, "".join(decide._decision_ids.next_hex() for _ in range(8)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(child, 0)
    childs = {text[i : i + 32] for i in range(0, len(text), 32)}
    parents = {decide._decision_ids.next_hex() for _ in range(8)}
    assert len(childs) == 8
    assert not childs & parents
