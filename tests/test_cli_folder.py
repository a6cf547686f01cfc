"""lpcore-train's folder as a second run, a kill during the final move and a
full disk meet it: one run owns --out (a lock), the final files go in as one
unit, a failed write says so and leaves no partial file; --threads."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from lpcore_torch import cli  # noqa: E402
from lpcore_torch.cli import files  # noqa: E402

SHORT = ["--epochs", "2", "--quiet"]
FINAL = ["masks.pt", "metrics.json", "model.pt", "training.png"]


def _cmd(out, *extra):
    return [sys.executable, "-m", "lpcore_torch", *SHORT, "--out", str(out), *extra]


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    """Two runs started on one --out: the second exits 2 and names the first;
    the first (held still meanwhile with SIGSTOP) ends normally with all its
    files."""
    out = tmp_path / "run"
    first = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    t0 = time.time()
    while not (out / files.OWNER).exists():
        assert first.poll() is None and time.time() - t0 < 120
        time.sleep(0.002)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(_cmd(out, "--method", "concave"), capture_output=True,
                                text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert "another lpcore-train run is using this folder" in second.stderr
    assert f"process {first.pid}" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert sorted(os.listdir(out)) == FINAL
    assert json.loads((out / "metrics.json").read_text())["method"] == "lpss"


def test_the_lock_is_refused_in_process_too_and_released_after(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = files.FolderLock(str(out))
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(SHORT + ["--out", str(out)])
        assert e.value.code == 2
        assert f"process {os.getpid()}" in capsys.readouterr().err
    finally:
        lock.release()
    assert cli.main(SHORT + ["--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == FINAL  # the lock's note is gone


# a run whose final move is cut after its second file: SIGKILL, or SIGTERM
_CUT = textwrap.dedent("""
    import os, signal, sys
    from lpcore_torch.cli import files, main
    real, n = os.replace, [0]
    def replace(src, dst):
        real(src, dst)
        if files.STAGING_PREFIX in src:
            n[0] += 1
            if n[0] == 2:
                os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    os.replace = replace
    sys.exit(main(sys.argv[2:]))
""")


def test_sigkill_during_the_final_move_is_completed_by_the_next_run(tmp_path):
    out = tmp_path / "run"
    assert cli.main(SHORT + ["--out", str(out), "--seed", "1"]) == 0
    old_model = (out / "model.pt").read_bytes()
    r = subprocess.run([sys.executable, "-c", _CUT, "SIGKILL", *SHORT, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    staged = [n for n in os.listdir(out) if n.startswith(files.STAGING_PREFIX)]
    assert len(staged) == 1 and os.path.exists(out / staged[0] / files.MANIFEST)
    # the next run on the folder finishes the install before anything else
    out_path, _, lock = files.prepare_out(pytest.fail, str(out))
    lock.release()
    assert sorted(os.listdir(out)) == FINAL
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0
    assert (out / "model.pt").read_bytes() != old_model


def test_sigterm_during_the_final_move_waits_for_it(tmp_path):
    out = tmp_path / "run"
    assert cli.main(SHORT + ["--out", str(out), "--seed", "1"]) == 0
    r = subprocess.run([sys.executable, "-c", _CUT, "SIGTERM", *SHORT, "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, r.stderr
    assert "terminated after the results were written" in r.stderr
    assert sorted(os.listdir(out)) == FINAL
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0


def test_a_full_disk_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = torch.save
    n = [0]

    def save(obj, f, *a, **k):
        if hasattr(f, "write") and getattr(f, "name", "").endswith(".checkpoint.pt.tmp"):
            n[0] += 1
            if n[0] == 2:  # the second epoch's checkpoint: part written, then no space
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", save)
    assert cli.main(["--epochs", "3", "--quiet", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert "cannot write" in err and "checkpoint.pt" in err
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]  # the first epoch's, whole
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(json.loads(ck["run"]["meta"])["history"]) == 1


def test_threads_are_chosen_printed_and_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    assert "1 torch thread" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1
    # auto: one thread for a model without convolutions
    assert cli.main(SHORT + ["--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["threads"] == 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            cli.main(SHORT + ["--threads", bad, "--out", str(tmp_path / "x")])
        assert "--threads" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_method_table_is_the_cores():
    from lpcore.methods import TRAININGS
    from lpcore_torch.cli.arguments import build_parser
    choices = next(a.choices for a in build_parser()._actions if a.dest == "method")
    assert tuple(choices) == tuple(TRAININGS)


def test_the_owner_note_appears_whole(tmp_path, monkeypatch):
    """A second run (or a test that stops the first) never reads a half-written
    note: the note is written aside and renamed into place, and a note a
    killed run left half written is removed by the next run."""
    seen = []
    real_dump = json.dump

    def dump(obj, f):
        seen.append((tmp_path / files.OWNER).exists())
        return real_dump(obj, f)
    monkeypatch.setattr(files.json, "dump", dump)
    lock = files.FolderLock(str(tmp_path))
    try:
        assert seen == [False]
        note = json.loads((tmp_path / files.OWNER).read_text())
        assert note["pid"] == os.getpid()
    finally:
        lock.release()
    assert os.listdir(tmp_path) == []
    (tmp_path / f"{files.OWNER}.12345").write_text('{"pid": 1')  # a killed run's leftover
    _, _, lock = files.prepare_out(pytest.fail, str(tmp_path))
    try:
        assert sorted(os.listdir(tmp_path)) == [files.OWNER]
    finally:
        lock.release()
