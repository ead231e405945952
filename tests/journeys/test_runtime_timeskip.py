"""The interpreter under the time-skipping test server: days of waiting take milliseconds."""
from __future__ import annotations

import textwrap

J = "apiVersion: tidings/v1\nkind: Journey\n"


def doc(body: str) -> str:
    return J + textwrap.dedent(body)


WAIT_THEN_SEND = doc("""
    id: nudge
    entry: {event: signed_up}
    steps:
      - {id: hello, send: {channel: EMAIL, template: t}}
      - {id: pause, wait: 2d}
      - {id: again, send: {channel: EMAIL, template: t}}
    """)


async def test_wait_two_days_then_send(journey_test):
    await journey_test.put(WAIT_THEN_SEND)
    pks = [journey_test.customer(f"u{i}") for i in range(5)]
    result = await journey_test.run("nudge", pks)
    assert result.counts == {"hello": 5, "pause": 5, "again": 5, "end": 5}
    sends = journey_test.sends("nudge")
    assert sorted(sends) == sorted([(f"u{i}", s, None) for i in range(5) for s in ("hello", "again")])
    runs = journey_test.runs("nudge")
    assert {r.status for r in runs.values()} == {"completed"}
    assert [s["step"] for s in runs["u0"].steps] == ["hello", "pause", "again", "end"]
