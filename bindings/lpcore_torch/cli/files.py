"""``lpcore-train``'s folder: one run owns it at a time (a lock), the
checkpoint is replaced atomically, and the final files go in as one unit.

The final files are written into a staging folder beside them; a manifest
written last marks it complete; then they are moved in, an earlier run's
files this run did not make are removed, the checkpoint goes last and the
staging folder with it.  A run killed while it moved them in (SIGKILL;
SIGTERM and Ctrl-C wait until the move is over) leaves the manifest: the
next run on the folder finishes that install before anything else, so the
folder never stays mixed.  A staging folder without a manifest is an
unfinished write and is removed.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import time

CHECKPOINT = "checkpoint.pt"
OUTPUTS = ("metrics.json", "training.png", "hoyer_vs_p.png", "model.pt", "masks.pt")
CKPT_FORMAT = "lpcore-train checkpoint 1"
STAGING_PREFIX = ".lpcore-train-"
MANIFEST = "MANIFEST.json"
OWNER = ".lpcore-train.owner"


class FolderBusy(RuntimeError):
    """Another lpcore-train run holds the folder."""


class FolderLock:
    """An exclusive ``flock`` on the folder itself (released by the kernel
    when the process dies, however it dies) and a note of who holds it."""

    def __init__(self, out):
        import fcntl
        self.out, self.fd = out, os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise FolderBusy(_holder(out)) from None
        # the note appears whole or not at all (a second run reading it, or a
        # test stopping this process, never sees it half written)
        tmp = os.path.join(out, f"{OWNER}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        os.replace(tmp, os.path.join(out, OWNER))

    def release(self):
        if self.fd is None:
            return
        try:
            os.remove(os.path.join(self.out, OWNER))
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = None


def _holder(out):
    try:
        with open(os.path.join(out, OWNER)) as f:
            who = json.load(f)
        return f"process {who['pid']}, started {who['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its note yet"


def prepare_out(fail, text):
    """Check ``--out``, create it, lock it and tidy what a killed run left
    (before any training).  ``fail(message)`` reports a bad destination (the
    parser's error: exit 2).  Returns (absolute path, the folders created,
    outermost first, the :class:`FolderLock`)."""
    if not text.strip():
        fail("--out must name a folder, got an empty string")
    out = os.path.abspath(text)
    anc, missing = out, []
    while not os.path.lexists(anc):
        missing.append(anc)
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        fail(f"--out {text!r}: {anc} exists and is not a folder")
    for name in OUTPUTS + (CHECKPOINT,):
        path = os.path.join(out, name)
        if not_a_file(path):
            fail(f"--out {text!r}: {path} exists and is not a regular file; "
                 "lpcore-train will not replace it")
    created = list(reversed(missing))
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=STAGING_PREFIX + "probe-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        remove_dirs(created)
        fail(f"--out {text!r}: cannot write there ({e.strerror or e})")
    try:
        lock = FolderLock(out)
    except FolderBusy as e:
        fail(f"--out {text!r}: another lpcore-train run is using this folder ({e}); wait for "
             "it to end or choose another --out")
    # what a killed run left: finish its install, remove its unfinished writes
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.startswith(STAGING_PREFIX) and os.path.isdir(path):
            if os.path.exists(os.path.join(path, MANIFEST)):
                with signals_deferred():
                    names = install(out, path)
                print(f"lpcore-train: moved in {', '.join(names)}: the results of a run in "
                      f"{out} that was killed while it moved them in", file=sys.stderr)
            else:
                shutil.rmtree(path, ignore_errors=True)
        elif name == os.path.basename(tmp_name(CHECKPOINT)) or name.startswith(OWNER + "."):
            os.remove(path)  # an unfinished checkpoint, or a note a killed run half wrote
    return out, created, lock


def not_a_file(path):
    """Something other than a regular file (a folder, a link) is at ``path``:
    lpcore-train never replaces it."""
    return os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path))


def tmp_name(path):
    """Where :func:`save_atomic` writes before renaming into ``path``."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")


def remove_dirs(created):
    """Remove the folders this run created, innermost first, if still empty."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            break


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(obj, path):
    """torch.save into ``path``: write a temporary file, fsync, rename, fsync the
    folder; a kill at any moment leaves the old file or the new one, whole.
    A failed write (a full disk) removes the partial file and raises
    ``OSError`` saying what could not be written."""
    import torch
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch reports a failed write as RuntimeError
        try:
            os.remove(tmp)
        except OSError:
            pass
        err = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
        raise OSError(err, f"cannot write {path} ({_why(e)}); the previous file, if any, "
                           "is unchanged") from None
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def _why(e):
    if isinstance(e, OSError):
        return e.strerror or str(e)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return "no space left on device?" if "write" in text.lower() else text


def stage(out):
    """A new staging folder in ``out`` for the final files."""
    return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)


@contextlib.contextmanager
def signals_deferred():
    """SIGTERM and SIGINT that arrive inside the block are held and raised
    again (to the handlers of before) once it is over.  (Blocking them with
    ``pthread_sigmask`` would not do: another thread of the process, e.g.
    one of torch's, takes the signal and Python runs the handler at once.)"""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held, old = [], {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


def install(out, staging, names=None):
    """Move the files of ``staging`` into ``out`` as one unit (see the module
    docstring); ``names``: the files (None: resume an install whose manifest
    is written).  Run it inside :func:`signals_deferred`."""
    manifest = os.path.join(staging, MANIFEST)
    if names is not None:
        for name in names:
            with open(os.path.join(staging, name), "rb") as f:
                os.fsync(f.fileno())
        with open(manifest + ".tmp", "w") as f:
            json.dump(sorted(names), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(manifest + ".tmp", manifest)  # whole or absent
        fsync_dir(staging)
    with open(manifest) as f:
        names = json.load(f)
    for name in names:
        src = os.path.join(staging, name)
        if os.path.exists(src):
            os.replace(src, os.path.join(out, name))
    for name in OUTPUTS:  # an earlier run's files that this run did not make
        if name not in names and os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    ckpt = os.path.join(out, CHECKPOINT)
    if os.path.exists(ckpt):
        os.remove(ckpt)
    fsync_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(out)
    return names


def load_checkpoint(fail, path, cfg):
    """The checkpoint at ``path`` if it is lpcore-train's and was made with
    ``cfg``'s run arguments; ``fail(message)`` otherwise."""
    import torch
    try:
        ck = torch.load(path, weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
            raise ValueError("not an lpcore-train checkpoint")
        saved = json.loads(ck["args"])
    except Exception as e:  # a damaged or foreign file: say so, change nothing
        fail(f"--resume: cannot read {path} ({e})")
    now = json.loads(json.dumps(cfg.run_args()))
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        fail("--resume: the checkpoint in --out was made with different arguments: "
             + ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {now.get(k)!r})"
                         for k in diff))
    return ck
