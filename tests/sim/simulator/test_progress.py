"""The progress report: off a terminal, a line at the first item and at every tenth of the
work."""

from __future__ import annotations

import io

from proxy.sim.simulator.progress import Progress


def test_a_line_per_tenth_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(20, stream, label="runs")
    for _ in range(20):
        progress.advance("note")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0].startswith("1/20 runs ")
    assert lines[-1].startswith("20/20 runs ")
    assert progress.done == 20
