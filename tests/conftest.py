import os

# the parallel kernels run whenever the size says so, even if other jobs keep
# the machine busy (lpcore would otherwise run them serially): tests exercise
# both paths deterministically.  Set before lpcore is imported.
os.environ.setdefault("LPCORE_PARALLEL_MIN_FREE_CORES", "0")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci": deterministic and bounded (CI and the README test command);
# "dev": many more random examples for local runs:  HYPOTHESIS_PROFILE=dev pytest
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=400,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
