"""What every suite shares: hypothesis profiles, and the receiver and model-name fixtures of the
end-to-end tests and the version matrix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.e2e.harness import Receiver

# The profiles, not the tests, decide how many examples a property test tries (no test sets
# max_examples itself): "dev", the default, keeps a local `make unit` quick; "ci" (chosen when
# CI is set, as .ci/run's environment has it) tries 300 a test, as many as the most thorough
# test tried when each set its own count, and a failure prints the blob that reproduces it.
# HYPOTHESIS_PROFILE=... picks one by hand.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on a free port, answering 200 until told otherwise."""
    recv = Receiver()
    recv.start()
    yield recv
    recv.stop()


@pytest.fixture
def model_name() -> str:
    """A model name no other test (or xdist worker) uses on a shared server."""
    return f"model-{uuid.uuid4().hex[:8]}"
