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
# (the backend fixture is function-scoped on purpose: one backend per test,
# shared by that test's examples)
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=40,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=400, suppress_health_check=_QUIET)
# "sim": the CUDA simulator runs each thread of each block as a Python thread
# (~0.15 s per block): a few deterministic examples per property
settings.register_profile("sim", derandomize=True, deadline=None,
                          max_examples=int(os.environ.get("LPCORE_CUDA_EXAMPLES", 5)),
                          suppress_health_check=list(HealthCheck), print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------------------
# the backend fixture: one test, every array family the public API takes
class Backend:
    """Moves test arrays to a backend and results back: ``put`` keeps the
    shape, dtype and strides (F-ordered and strided device arrays too)."""

    def __init__(self, name):
        self.name = name
        #: strategy keywords: small arrays on the GPU (the simulator pays per block)
        self.small = dict(max_dims=3, max_side=5) if name == "cuda" else {}

    def put(self, x):
        if self.name == "numpy" or not isinstance(x, np.ndarray):
            return x
        from numba import cuda

        from lpcore import _device as D
        if x.flags.c_contiguous:
            return cuda.to_device(x)
        span = D.extent(x)
        base = np.lib.stride_tricks.as_strided(x, (span,), (x.dtype.itemsize,)).copy()
        return D.view(cuda.to_device(base), x.shape, x.strides)

    @staticmethod
    def get(r):
        return r.copy_to_host() if hasattr(r, "copy_to_host") else np.asarray(r)

    def __call__(self, f, *arrays, **kw):
        """``f`` on the arrays moved to this backend (array keyword arguments
        too); the result back on the host."""
        kw = {k: self.put(v) for k, v in kw.items()}
        return self.get(f(*[self.put(a) for a in arrays], **kw))

    def __repr__(self):
        return self.name


def _cuda_params():
    try:
        from numba import cuda
        if not cuda.is_available():
            raise ImportError
    except ImportError:
        if os.environ.get("LPCORE_REQUIRE_CUDA"):  # the simulator step: never skip silently
            raise RuntimeError("LPCORE_REQUIRE_CUDA is set but numba.cuda has no GPU or "
                               "simulator") from None
        return []
    from numba import config
    # under the simulator tiny blocks only (small inputs then span several
    # slices and grid-stride rounds); on a GPU also the default geometry
    geoms = ["tiny"] if config.ENABLE_CUDASIM else ["tiny", "default"]
    return [pytest.param(("cuda", g), marks=pytest.mark.cuda, id=f"cuda-{g}") for g in geoms]


BACKENDS = [pytest.param(("numpy", None), id="numpy")] + _cuda_params()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """``numpy`` always; ``cuda`` on a GPU or under the CUDA simulator
    (``NUMBA_ENABLE_CUDASIM=1``), marked ``cuda``."""
    name, geom = request.param
    if geom == "tiny":
        from lpcore.kernels.cuda import launch_config
        with launch_config(threads=4, items=2, max_blocks=4):
            yield Backend(name)
    else:
        yield Backend(name)


@pytest.fixture
def host_copies(backend, monkeypatch):
    """``(sizes, watching)``: under the simulator, the sizes of the
    device-to-host copies made while ``watching[0]`` is set (``sizes`` None on
    a real GPU or on the host, where nothing is watched)."""
    from lpcore import _device as D
    if not (backend.name == "cuda" and D.simulated()):
        return None, [False]
    from numba.cuda.simulator.cudadrv import devicearray as sim_array
    sizes, watching = [], [False]
    copy = sim_array.FakeCUDAArray.copy_to_host
    monkeypatch.setattr(sim_array.FakeCUDAArray, "copy_to_host",
                        lambda self, ary=None, stream=0:
                        (watching[0] and sizes.append(self.size)) or copy(self, ary, stream))
    return sizes, watching
