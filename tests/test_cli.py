"""lpcore-train as a hostile user and a crashing machine meet it: every argument
and the destination checked before training (exit 2, nothing created), nothing
half-written or left behind, checkpoints, and --resume bitwise identical to a
run that never stopped (after an exception, SIGTERM or SIGKILL)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import lpcore_torch  # noqa: E402
from lpcore_torch import cli  # noqa: E402

SHORT = ["--epochs", "5", "--quiet"]  # digits, MLP, LpSS: the topology window is epochs 1-4


def _outputs(out):
    """metrics.json without its wall time, and the final state_dict."""
    m = json.loads((out / "metrics.json").read_text())
    m.pop("train_time_s")
    return m, torch.load(out / "model.pt", weights_only=True)


def _same(a, b):
    ma, wa = a
    mb, wb = b
    assert ma == mb
    assert list(wa) == list(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the same run again (the baseline of equality)."""
    outs = []
    for name in ("ref", "ref2"):
        out = tmp_path_factory.mktemp(name) / "run"
        assert cli.main(SHORT + ["--out", str(out)]) == 0
        outs.append(_outputs(out))
    _same(*outs)
    return outs[0]


def _never_trains(monkeypatch):
    def boom(self):
        raise AssertionError("trained although the arguments were bad")
    monkeypatch.setattr(cli.Run, "epoch", boom)


# ------------------------------------------------------------ arguments: exit 2, nothing made
@pytest.mark.parametrize("bad", [
    ["--p", "1.3,1.5,1.7"], ["--p", "1.3,1.5,1.7,1.9"], ["--lr", "inf"], ["--lr", "nan"],
    ["--lp-lr", "nan"], ["--lr-decay", "nan"], ["--lr-decay", "inf"], ["--momentum", "nan"],
    ["--h0", "nan"], ["--target-sparsity", "nan"], ["--seed", "-1"],
    ["--seed", "18446744073709551616"], ["--seed", str(2**32)], ["--lr", "1e308"],
    ["--lr-decay", "1e39"], ["--recipe", "reference", "--p", "1.3"],
    ["--method", "lpss", "--rounds", "7"], ["--method", "scl", "--mask-lr", "1e-320"],
    ["--method", "concave", "--mask-lr", "1e308"], ["--threads", "0"],
    ["--recipe", "reference", "--method", "rigl"], ["--recipe", "reference", "--no-revive"],
])
def test_bad_arguments_exit_2_before_anything(bad, tmp_path, capsys, monkeypatch):
    _never_trains(monkeypatch)
    out = tmp_path / "a" / "b"
    with pytest.raises(SystemExit) as e:
        cli.main(bad + ["--out", str(out), "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_bad_destinations_exit_2_before_training(tmp_path, capsys, monkeypatch):
    _never_trains(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = [str(afile), str(afile / "sub"), str(afile / "sub" / "deeper"), "", "   ",
             "/proc/x", "/proc/self/nothing/here"]
    run_dir = tmp_path / "run"
    (run_dir / "training.png").mkdir(parents=True)
    (run_dir / "metrics.json").write_text("an earlier run")
    cases.append(str(run_dir))
    link_dir = tmp_path / "linked"
    link_dir.mkdir()
    os.symlink(afile, link_dir / "metrics.json")
    cases.append(str(link_dir))
    for out in cases:
        with pytest.raises(SystemExit) as e:
            cli.main(SHORT + ["--out", out])
        assert e.value.code == 2, out
        err = capsys.readouterr().err
        assert "--out" in err and "Traceback" not in err, err
    assert afile.read_text() == "keep me"
    assert (run_dir / "metrics.json").read_text() == "an earlier run"
    assert sorted(os.listdir(tmp_path)) == ["afile", "linked", "run"]
    assert sorted(os.listdir(run_dir)) == ["metrics.json", "training.png"]


# ------------------------------------------------------------ interruptions leave nothing
@pytest.mark.parametrize("how, code", [(KeyboardInterrupt, 130), ("sigterm", 143)])
def test_interrupt_before_the_first_epoch_removes_what_it_created(how, code, tmp_path,
                                                                   monkeypatch, capsys):
    def stop(self):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises first
        raise how()
    monkeypatch.setattr(cli.Run, "epoch", stop)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(SHORT + ["--out", str(tmp_path / "a" / "b" / "run")]) == code
    assert os.listdir(tmp_path) == []
    assert "nothing was written" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_earlier_runs_files_do_not_stay_beside_the_new_ones(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "hoyer_vs_p.png").write_bytes(b"from a sweep")
    (out / "notes.txt").write_text("the user's")
    assert cli.main(["--epochs", "1", "--quiet", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["masks.pt", "metrics.json", "model.pt", "notes.txt",
                                       "training.png"]


# ------------------------------------------------------------ checkpoints and --resume
def test_checkpoint_is_loadable_with_weights_only(tmp_path, monkeypatch):
    real = cli.Run.epoch
    calls = []

    def two_then_stop(self):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self)
    monkeypatch.setattr(cli.Run, "epoch", two_then_stop)
    out = tmp_path / "run"
    assert cli.main(SHORT + ["--out", str(out)]) == 130
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]  # no results, no temporary files
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    run = ck["run"]
    assert {"model", "optimizer", "generator", "torch_rng", "meta"} <= run.keys()
    assert any(k.endswith("weight_mask") for k in run["model"])
    meta = json.loads(run["meta"])
    assert len(meta["history"]) == 2 and meta["trainer"]["t"] > 0


@pytest.mark.parametrize("stop_at", ["epoch 1", "epoch 2", "epoch 4", "finish"])
def test_resume_after_an_interruption_is_bitwise_identical(stop_at, reference, tmp_path,
                                                           monkeypatch):
    out = tmp_path / "run"
    real_epoch, real_finish = cli.Run.epoch, cli.Run.finish
    n = {"epochs": 0}

    def epoch(self):
        if stop_at == f"epoch {n['epochs']}":
            raise KeyboardInterrupt
        n["epochs"] += 1
        return real_epoch(self)

    def finish(self):
        if stop_at == "finish":
            raise KeyboardInterrupt
        return real_finish(self)
    monkeypatch.setattr(cli.Run, "epoch", epoch)
    monkeypatch.setattr(cli.Run, "finish", finish)
    assert cli.main(SHORT + ["--out", str(out)]) == 130
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(cli.Run, "epoch", real_epoch)
    monkeypatch.setattr(cli.Run, "finish", real_finish)
    assert cli.main(SHORT + ["--out", str(out), "--resume"]) == 0
    _same(_outputs(out), reference)
    assert sorted(os.listdir(out)) == ["masks.pt", "metrics.json", "model.pt", "training.png"]


def test_sweep_resumes_inside_its_second_run(tmp_path, monkeypatch):
    args = ["--sweep-p", "1.2,2.0", "--method", "dense-lp", "--epochs", "2", "--quiet"]
    ref = tmp_path / "ref"
    assert cli.main(args + ["--out", str(ref)]) == 0
    real = cli.Run.epoch
    n = [0]

    def epoch(self):
        if n[0] == 3:
            raise KeyboardInterrupt
        n[0] += 1
        return real(self)
    monkeypatch.setattr(cli.Run, "epoch", epoch)
    out = tmp_path / "run"
    assert cli.main(args + ["--out", str(out)]) == 130
    monkeypatch.setattr(cli.Run, "epoch", real)
    assert cli.main(args + ["--out", str(out), "--resume"]) == 0
    _same(_outputs(out), _outputs(ref))
    assert (out / "hoyer_vs_p.png").exists()


def test_resume_refuses_other_arguments_and_damaged_checkpoints(tmp_path, monkeypatch, capsys):
    real = cli.Run.epoch

    def one_then_stop(self):
        if self.history:
            raise KeyboardInterrupt
        return real(self)
    monkeypatch.setattr(cli.Run, "epoch", one_then_stop)
    out = tmp_path / "run"
    ck = out / "checkpoint.pt"
    assert cli.main(SHORT + ["--out", str(out)]) == 130
    saved = ck.read_bytes()
    for bad in (["--seed", "1"], ["--lr", "0.1"], ["--target-sparsity", "0.8"], ["--epochs", "6"]):
        args = SHORT + bad if bad[0] != "--epochs" else ["--epochs", "6", "--quiet"]
        with pytest.raises(SystemExit) as e:
            cli.main(args + ["--out", str(out), "--resume"])
        assert e.value.code == 2
        assert "different arguments" in capsys.readouterr().err
        assert ck.read_bytes() == saved
    ck.write_bytes(saved[: len(saved) // 2])
    with pytest.raises(SystemExit) as e:
        cli.main(SHORT + ["--out", str(out), "--resume"])
    assert e.value.code == 2
    assert "cannot read" in capsys.readouterr().err


def test_resume_without_a_checkpoint_starts_from_the_beginning(reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(SHORT + ["--out", str(out), "--resume"]) == 0
    assert "starting from the beginning" in capsys.readouterr().err
    _same(_outputs(out), reference)


def _cmd(out, *extra):
    return [sys.executable, "-m", "lpcore_torch", *SHORT, "--out", str(out), *extra]


@pytest.mark.parametrize("when", ["first", "replaced"])
def test_sigkill_at_any_moment_then_resume_is_bitwise_identical(when, reference, tmp_path):
    """Killed with SIGKILL while training (right after the first checkpoint
    appeared, and once a later epoch has replaced it: mid-epoch or mid-write),
    then resumed: the same results as a run that never stopped.  (A fixed
    0.7 s delay raced with the end of the 5-epoch run once the run got faster.)"""
    out = tmp_path / "run"
    ck = out / "checkpoint.pt"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not ck.exists():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.time() - t0 < 120
        time.sleep(0.005)
    if when == "replaced":
        first = ck.stat().st_mtime_ns
        while True:
            try:
                if ck.stat().st_mtime_ns != first:
                    break
            except FileNotFoundError:  # between the rename's unlink and link: a write
                break
            assert proc.poll() is None, "finished before it could be killed"
            time.sleep(0.002)
    assert proc.poll() is None, "finished before it could be killed"
    proc.kill()
    proc.wait()
    assert not (out / "metrics.json").exists()
    r = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _same(_outputs(out), reference)
    assert sorted(os.listdir(out)) == ["masks.pt", "metrics.json", "model.pt", "training.png"]


def test_sigterm_keeps_the_checkpoint_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "--resume" in err
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]


def test_a_diverging_run_stops_with_a_message_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "a" / "run"
    assert cli.main(["--lr", "1e30", "--epochs", "2", "--quiet", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "stopped at epoch 1" in err and "NaN or Inf" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_imp_resumes_bitwise_identical_across_a_rewind(tmp_path, monkeypatch):
    """The parameters kept to rewind to are part of the checkpoint: a run
    stopped after the rewind step and resumed ends like one that never stopped."""
    args = ["--method", "imp", "--epochs", "2", "--rounds", "2", "--quiet"]
    ref = tmp_path / "ref"
    assert cli.main(args + ["--out", str(ref)]) == 0
    out = tmp_path / "run"
    real_epoch = cli.Run.epoch
    n = {"epochs": 0}

    def epoch(self):
        if n["epochs"] == 3:  # inside the second training, after the first rewind
            raise KeyboardInterrupt
        n["epochs"] += 1
        return real_epoch(self)
    monkeypatch.setattr(cli.Run, "epoch", epoch)
    assert cli.main(args + ["--out", str(out)]) == 130
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["run"]["trainer_tensors"]  # the rewind copy is saved
    monkeypatch.setattr(cli.Run, "epoch", real_epoch)
    assert cli.main(args + ["--out", str(out), "--resume"]) == 0
    _same(_outputs(out), _outputs(ref))
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 6 and abs(m["sparsity"] - 0.9) <= 0.01


def test_model_pt_loads_into_the_plain_model_with_the_same_accuracy(tmp_path):
    """model.pt is the plain model's state_dict (masked weights zero, no mask
    buffers): a fresh model of the same architecture loads it and gets the
    run's test accuracy; masks.pt holds the masks by weight name."""
    from lpcore_torch.data import load
    out = tmp_path / "run"
    assert cli.main(["--epochs", "3", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    Xtr, ytr, Xte, yte, shape = load("digits", 0)
    net = lpcore_torch.build_model("mlp", Xtr[0].size, shape, int(max(ytr.max(), yte.max()) + 1))
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))  # strict: no extra keys
    with torch.no_grad():
        acc = (net(torch.from_numpy(Xte)).argmax(1) == torch.from_numpy(yte)).float().mean()
    assert float(acc) == m["test_accuracy"]
    masks = torch.load(out / "masks.pt", weights_only=True)
    assert sorted(masks) == ["1.weight", "3.weight"]
    for name, mk in masks.items():
        w = dict(net.named_parameters())[name]
        assert mk.dtype == torch.bool and torch.all(w[~mk] == 0)
