"""Good manners at run time: lpcore leaves other libraries' thread settings
alone and works in forked children (DataLoader workers), whatever Numba
threading layer runs.  Each case runs in a fresh interpreter, because the
threading layer is chosen once per process."""
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

LAYERS = [None, "omp"]  # lpcore's default (TBB where the wheel exists), and GNU OpenMP forced


def run(code, layer):
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("layer", LAYERS)
def test_torch_thread_count_is_left_alone(layer):
    out = run("""
        import numpy as np, torch, numba, lpcore
        from lpcore_torch import LpSGD
        m = torch.nn.Linear(512, 512).half()
        opt = LpSGD(m.parameters(), lr=0.1, p=1.5)
        m(torch.randn(4, 512).half()).float().sum().backward()
        opt.step()
        before = numba.get_num_threads()
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            lpcore.norm(np.random.rand(512, 512), 1.5, axis=1)
            lpcore.hoyer(np.random.rand(512, 512), axis=1)
            assert torch.get_num_threads() == n, (n, torch.get_num_threads())
        assert numba.get_num_threads() == before
        print(lpcore._threads.layer())
    """, layer)
    if layer:
        assert out.strip() == layer


@pytest.mark.parametrize("layer", LAYERS)
def test_forked_children_work(layer):
    run("""
        import os, numpy as np, lpcore
        x = np.random.rand(512, 512)
        ref = lpcore.norm(x, 1.5, axis=1)           # the parent's pool is running
        pid = os.fork()
        if pid == 0:
            ok = np.allclose(lpcore.norm(x, 1.5, axis=1), ref)
            ok &= np.isfinite(lpcore.normalize(x, 1.3, axis=1)).all()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert np.allclose(lpcore.norm(x, 1.5, axis=1), ref)   # and the parent still works
    """, layer)


@pytest.mark.parametrize("layer", LAYERS)
def test_dataloader_workers_call_lpcore(layer):
    run("""
        import numpy as np, torch, lpcore
        from torch.utils.data import DataLoader, Dataset

        class Rows(Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                x = np.random.default_rng(i).normal(size=(256, 256))
                return torch.from_numpy(lpcore.normalize(x, 1.5, axis=1))

        lpcore.normalize(np.random.rand(512, 512), 1.5, axis=1)   # parent pool running
        dl = DataLoader(Rows(), batch_size=2, num_workers=2,
                        multiprocessing_context="fork")
        n = sum(b.shape[0] for b in dl)
        assert n == 8, n
    """, layer)


def test_a_busy_machine_runs_the_kernels_serially(monkeypatch):
    """Other processes' CPU time (from /proc/stat, less this process's own)
    decides: fewer than LPCORE_PARALLEL_MIN_FREE_CORES free cores -> serial."""
    import lpcore._threads as T
    from lpcore.kernels._dispatch import use_parallel

    clock = {"t": 100.0, "busy": 0, "total": 0, "own": 0.0}
    monkeypatch.setattr(T, "_read_stat", lambda: (clock["busy"], clock["total"]))
    monkeypatch.setattr(T, "_ncores", lambda: 2)
    monkeypatch.setattr(T, "BUSY_MIN_FREE", 1.5)
    monkeypatch.setattr(T, "_busy", {"t": None, "stat": None, "own": None, "free": None})
    import time
    monkeypatch.setattr(time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(time, "process_time", lambda: clock["own"])

    def window(others, own, dt=0.5, hz=100):
        # 2 CPUs: total jiffies 2 * hz * dt; busy = (others + own) cores
        clock["t"] += dt
        clock["total"] += int(2 * hz * dt)
        clock["busy"] += int((others + own) * hz * dt)
        clock["own"] += own * dt
        return T.free_cores()

    assert T.free_cores() is None and not T.machine_busy()   # no window yet: not busy
    assert window(others=0.0, own=2.0) == pytest.approx(2.0)  # only we run: idle machine
    assert use_parallel(1 << 20, 64)
    assert window(others=1.0, own=1.0) == pytest.approx(1.0)  # two busy processes' share
    assert T.machine_busy() and not use_parallel(1 << 20, 64)
    assert window(others=0.2, own=1.8) == pytest.approx(1.8)
    assert use_parallel(1 << 20, 64)
    monkeypatch.setattr(T, "_read_stat", lambda: None)      # no /proc/stat: never busy
    clock["t"] += 1.0
    assert T.free_cores() is None and not T.machine_busy()


def test_the_load_is_read_for_our_cpus_only():
    import lpcore._threads as T
    r = T._read_stat()
    if r is None:
        pytest.skip("no /proc/stat")
    busy, total = r
    assert 0 <= busy <= total
    with open("/proc/stat") as f:
        first = [int(v) for v in f.readline().split()[1:9]]
    if len(os.sched_getaffinity(0)) == os.cpu_count():
        assert total <= sum(first) + 100 * os.cpu_count()  # read a moment later
