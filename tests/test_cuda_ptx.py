"""Every CUDA kernel compiles to PTX for a real GPU (sm_90), for float32 and float64.

The CUDA simulator runs kernels as Python, so it never type-checks them: a
kernel can pass the simulator suite and still fail to compile for a GPU.
This test compiles each kernel with ``numba.cuda.compile_ptx``, which needs
NVVM (the ``nvidia-cuda-nvcc-cu12`` wheel that ``numba-cuda[cu12]`` brings)
but no GPU.  It also checks that the float32 power kernels stay in float32
(no ``.f64`` instruction in the duality map).

Skipped under the simulator (which replaces ``numba.cuda``) and when NVVM is
not installed.
"""
import types

import pytest

from numba import config

if config.ENABLE_CUDASIM:
    pytest.skip("compile_ptx needs the real numba.cuda, not the simulator",
                allow_module_level=True)

from numba import cuda, types as T  # noqa: E402

from lpcore.kernels.cuda import ball as B, dual as Du, hoyer as H, layout as La, lpsgd as L  # noqa: E402
from lpcore.kernels.cuda import norm as N, tangent as T_, topology as Tp  # noqa: E402
from lpcore.kernels.cuda import masklearn as Ml  # noqa: E402

f8, i8, b1 = T.float64, T.int64, T.boolean

# one worker runs the whole module (pytest-xdist --dist loadgroup): the PTX of
# a kernel is compiled once and shared by the tests below (about 1.5 s each)
pytestmark = pytest.mark.xdist_group("sm90")


def A1(t):
    return T.Array(t, 1, "C")


def A2(t):
    return T.Array(t, 2, "C")


def signatures(dt):
    tup = T.UniTuple(i8, 3)
    return {
        N._k_norm: (A2(dt), i8, f8, b1, i8, A1(f8), A1(f8), A1(i8), A1(f8), A1(i8)),
        H._k_hoyer: (A2(dt), b1, i8, A1(f8), A1(f8), A1(f8), A1(i8), i8, A1(dt), A1(i8)),
        T_._k_tangent: (A2(dt), A2(dt), A1(f8), dt, i8, A1(f8), A1(f8)),
        T_._k_tangent_combine: (A1(f8), A1(f8), i8, i8, A1(f8), A1(i8)),
        N._k_scale: (A2(dt), A1(f8), A2(dt), i8),
        T_._k_tangent_write: (A2(dt), A2(dt), A1(f8), A1(f8), dt, A2(dt), i8),
        Du._k_signed_pow: (A1(dt), dt, A1(dt), A1(i8)),
        La._k_add: (A2(dt), A2(dt), A2(dt)),
        La._k_fill: (A2(dt), dt),
        La._k_strided: (A1(T.int32), A2(dt), tup, tup, b1),  # int32 -> dt and back
        B._k_ball: (A2(dt), A1(f8), i8, f8, f8, A2(dt)),
        Tp._k_drop: (A2(dt), A2(b1), f8, b1, A2(b1), A1(f8), A1(i8)),
        Tp._k_keys: (A2(dt), A1(f8), f8, A2(f8)),
        Tp._k_select_start: (A1(b1), b1, i8, A1(i8), A1(i8)),
        Tp._k_hist: (A1(i8), A1(b1), b1, i8, A1(i8), A1(i8)),
        Tp._k_pick: (A1(i8), A1(i8), i8),
        Tp._k_mark: (A1(i8), A1(b1), b1, A1(i8), A1(b1), A1(T.uint8)),
        Tp._k_magnitudes: (A1(dt), A1(b1), b1, A1(dt), A1(i8)),
        Tp._k_marks: (A1(b1), b1, A1(T.uint8)),
        Tp._k_take: (A1(i8), A1(i8), A1(b1), A1(i8)),
        Tp._k_compact: (A1(T.uint8), A1(i8)),
        Tp._k_activated: (A1(b1), A1(b1), A1(b1), A1(T.uint8), A1(i8)),
        Tp._k_copy_mask: (A1(b1), A1(b1)),
        Tp._k_rows: (A2(dt), A2(b1), b1, A1(b1), A1(f8), A1(i8)),
        Tp._k_fill_rows: (A2(b1), A1(b1), b1, b1, A2(b1), A1(i8)),
        Ml._k_score: (A2(f8), A2(dt), A2(dt), f8, A2(f8), A1(i8)),
        Ml._k_concave: (A2(f8), A2(dt), A2(dt), b1, f8, f8, b1, f8, f8, A2(f8), A1(i8)),
        Ml._k_signs: (A1(f8), A1(f8), A1(b1), A1(i8)),
        Ml._k_count_at_most: (A1(f8), f8, f8, A1(i8)),
        Ml._k_scores: (A1(f8), f8, b1, A1(f8)),
        Ml._k_tiers: (A1(f8), f8, A1(b1), A1(b1), A1(i8)),
        Ml._k_keep: (A1(b1), A1(b1), A1(b1), A1(b1)),
        L._k_scale: (A2(i8), A2(i8), A2(f8), A2(i8), A2(f8), A2(f8), A1(i8), dt, i8, b1),
        **step_signatures(dt),
    }


def step_signatures(dt):
    """The LpSGD step's check and update kernels, one pair per (variant, momentum)."""
    out = {}
    for check, update in L.KERNELS.values():
        out[check] = (A2(i8), A2(i8), A2(f8), A2(i8), A2(f8), A2(f8), A1(i8), A1(i8), dt, i8)
        out[update] = (A2(i8), A2(i8), A2(f8), A2(i8), A2(f8), A2(f8), A2(f8), A1(i8), A1(i8), dt,
                       i8)
    return out


@pytest.fixture(scope="module")
def compile_for_sm90():
    import numba.cuda.dispatcher as disp
    if not hasattr(disp, "get_current_device"):
        pytest.skip("numba-cuda internals changed: cannot pin the device-function target")
    try:
        cuda.compile_ptx(lambda a: None, (A1(f8),), cc=(9, 0))
    except Exception as e:  # NVVM missing
        pytest.skip(f"NVVM not available for compile_ptx: {type(e).__name__}: {e}")
    # device functions called from kernels are compiled for the *current*
    # device; with no GPU, pin that to compute capability 9.0
    old = disp.get_current_device
    disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    done = {}

    def compile_ptx(k, sig):
        key = (k.py_func, tuple(sig))
        if key not in done:
            done[key] = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))[0]
        return done[key]
    try:
        yield compile_ptx
    finally:
        disp.get_current_device = old


def test_the_signature_table_lists_every_kernel():
    """A kernel added to lpcore.kernels.cuda without an entry here would not be
    compiled by these tests."""
    import importlib
    import pkgutil

    import lpcore.kernels.cuda as pkg
    listed = {k.py_func for k in signatures(T.float64)}
    missing = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name, obj in vars(mod).items():
            if name.startswith("_k_") and getattr(obj, "py_func", None) not in listed:
                missing.append(f"{info.name}.{name}")
    assert not missing, missing


@pytest.mark.parametrize("dtype", [T.float32, T.float64], ids=["float32", "float64"])
def test_every_kernel_compiles_for_sm90(compile_for_sm90, dtype):
    for kernel, sig in signatures(dtype).items():
        ptx = compile_for_sm90(kernel, sig)
        assert ".visible .entry" in ptx, kernel.py_func.__name__


def test_float32_powers_stay_float32(compile_for_sm90):
    ptx = compile_for_sm90(Du._k_signed_pow, signatures(T.float32)[Du._k_signed_pow])
    assert ".f64" not in ptx


def _ptxas():
    import os
    try:
        import nvidia.cuda_nvcc as nvcc
    except ImportError:
        return None
    for base in list(getattr(nvcc, "__path__", [])):
        exe = os.path.join(base, "bin", "ptxas")
        if os.path.exists(exe) and os.access(exe, os.X_OK):
            return exe
    return None


def _assemble(compile_for_sm90, kernel, sig, tmp_path):
    """ptxas (from the nvcc wheel) turns the PTX into sm_90 machine code: the
    whole chain a GPU's first call runs.  (registers a thread, spill stores)."""
    import re
    import subprocess
    exe = _ptxas()
    if exe is None:
        pytest.skip("ptxas not installed (nvidia-cuda-nvcc-cu12)")
    f = tmp_path / f"{kernel.py_func.__name__}.ptx"
    f.write_text(compile_for_sm90(kernel, sig))
    r = subprocess.run([exe, "-arch=sm_90", "-v", str(f), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, (kernel.py_func.__name__, r.stderr[-2000:])
    regs = [int(v) for v in re.findall(r"Used (\d+) registers", r.stderr)]
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", r.stderr)]
    assert regs, r.stderr
    return max(regs), sum(spills)


@pytest.mark.parametrize("dtype", [T.float32, T.float64], ids=["float32", "float64"])
def test_every_kernel_assembles_for_sm90_without_spills(compile_for_sm90, dtype, tmp_path):
    for kernel, sig in signatures(dtype).items():
        regs, spills = _assemble(compile_for_sm90, kernel, sig, tmp_path)
        assert regs <= 128, (kernel.py_func.__name__, regs)
        assert spills == 0, (kernel.py_func.__name__, spills)


def blocks_per_sm(regs, threads=256):
    """Thread blocks an sm_90 multiprocessor holds at once as registers allow
    (65,536 a multiprocessor, allocated per warp in units of 256)."""
    per_warp = -(-regs * 32 // 256) * 256
    return 65536 // (per_warp * (threads // 32))


def test_blocks_per_sm_matches_the_occupancy_rule():
    assert blocks_per_sm(64) == 4 and blocks_per_sm(80) == 3 and blocks_per_sm(88) == 2
    assert blocks_per_sm(119) == 2 and blocks_per_sm(32) == 8


def test_step_kernels_keep_four_and_three_blocks_in_flight(compile_for_sm90, tmp_path):
    # the step's kernels are latency-bound (DESIGN section 9): the blocks an SM
    # keeps in flight decide how much memory traffic overlaps.  One kernel for
    # every variant needed 119 registers in its float32 update (two blocks of
    # 256 threads per SM); specialised per variant and momentum setting, and
    # with the ratios of the max-scaled sums taken as products with a
    # reciprocal (a float64 division is a call that pins registers) and each
    # block's tensor, group and slice read from the block table (no search,
    # no 64-bit division), every float32 check kernel fits four blocks and
    # every update three, while loading two entries a trip; the float64 dual
    # kernels fit three (with the search: 89 and 92 registers, two blocks)
    sigs = step_signatures(T.float32)
    for variant in (L.DUAL, L.PRIMAL, L.RIEMANNIAN):
        for has_mom in (False, True):
            check, update = L.KERNELS[(variant, has_mom)]
            regs, _ = _assemble(compile_for_sm90, check, sigs[check], tmp_path)
            assert blocks_per_sm(regs) >= 4, ("check", variant, has_mom, regs)
            regs, _ = _assemble(compile_for_sm90, update, sigs[update], tmp_path)
            assert blocks_per_sm(regs) >= 3, ("update", variant, has_mom, regs)
    sigs = step_signatures(T.float64)
    for has_mom in (False, True):
        for kernel in L.KERNELS[(L.DUAL, has_mom)]:
            regs, _ = _assemble(compile_for_sm90, kernel, sigs[kernel], tmp_path)
            assert blocks_per_sm(regs) >= 3, ("float64", has_mom, regs)


def test_the_float32_check_kernels_load_two_entries_a_trip(compile_for_sm90):
    # each trip of the check's loop issues the loads of two entries before it
    # uses either (a thread waits on memory once per two entries): two float32
    # loads of every array the variant reads (gradient and weight; the
    # momentum buffer with momentum; the dual state for the dual variant), and
    # no float64 arithmetic between the first and the last of them
    sigs = step_signatures(T.float32)
    for variant in (L.DUAL, L.PRIMAL, L.RIEMANNIAN):
        for has_mom in (False, True):
            check = L.KERNELS[(variant, has_mom)][0]
            ptx = compile_for_sm90(check, sigs[check])
            arrays = 2 + has_mom + (variant == L.DUAL)
            assert ptx.count("ld.f32") == 2 * arrays, (variant, has_mom, ptx.count("ld.f32"))
            trip = ptx[ptx.index("ld.f32"):ptx.rindex("ld.f32")]
            assert ".f64" not in trip, (variant, has_mom)


def test_the_float32_standalone_kernels_load_four_entries_a_trip(compile_for_sm90):
    # the block-stride loops of norm, hoyer, normalize's scaling and the
    # tangent projection load four entries (load4) of each array before they
    # use any: their float32 loads come in runs of four with no float64
    # arithmetic inside a run (one entry a trip: a thread waited on memory
    # once per entry, and norm/hoyer ran at 5-12% of the copy bandwidth on an
    # H200)
    import re
    sigs = signatures(T.float32)
    for kernel in (N._k_norm, H._k_hoyer, N._k_scale, T_._k_tangent, T_._k_tangent_write):
        ptx = compile_for_sm90(kernel, sigs[kernel])
        at = [m.start() for m in re.finditer(r"ld\.global\.f32", ptx)]
        name = kernel.py_func.__name__
        assert at and len(at) % 4 == 0, (name, len(at))
        for i in range(0, len(at), 4):
            assert ".f64" not in ptx[at[i]:at[i + 3]], (name, i)
