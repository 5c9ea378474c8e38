"""The User-Agent the audit keeps: Envoy's cut (`%REQ(user-agent):N%`, bytes) and the decision's
agree, so a long one is stored once, cut, and both halves still match."""

from __future__ import annotations

import pytest

from gateway_contract.access_log import AUDIT_USER_AGENT_MAX_BYTES, audit_user_agent, log_format

N = AUDIT_USER_AGENT_MAX_BYTES


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (None, None),
        ("curl/8", "curl/8"),
        ("a" * N, "a" * N),
        ("a" * (N + 1), "a" * N),
        ("é" * N, "é" * (N // 2)),  # two bytes each
        ("a" + "é" * N, "a" + "é" * ((N - 1) // 2)),  # the character cut in two is dropped
        ("\udcff" * 2, "\udcff" * 2),  # short: as it came (the cleaner replaces surrogates)
    ],
)
def test_the_decision_keeps_the_first_bytes_envoy_keeps(
    given: str | None, kept: str | None
) -> None:
    assert audit_user_agent(given) == kept
    if kept is not None and given is not None and given.isascii():
        assert len(kept.encode()) <= N


def test_envoys_access_log_cuts_the_same_bytes_and_the_path_at_its_limit() -> None:
    fields = log_format("PLANT", "%K%", "%C%", max_path_bytes=4096)
    assert fields["user_agent"] == f"%REQ(user-agent):{N}%"
    assert fields["path"] == "%PATH(NQ:ORIG_OR_PATH):4096%"
