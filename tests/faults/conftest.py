"""The fault tally shared by all cases of this folder, and the summary line printed after the run."""

from __future__ import annotations

import pytest

from tests.faults._tally import FaultTally

_TALLY = pytest.StashKey[FaultTally]()


@pytest.fixture(scope="session")
def fault_tally(pytestconfig: pytest.Config) -> FaultTally:
    """Every case records its outcome here; each test also asserts its own, so a bad count fails the run."""
    return pytestconfig.stash.setdefault(_TALLY, FaultTally())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, None)
    if tally is None or tally.tried == 0:
        return  # no fault case ran (e.g. deselected): nothing to sum up
    terminalreporter.write_sep("=", "fault injection")
    terminalreporter.write_line(tally.summary())
