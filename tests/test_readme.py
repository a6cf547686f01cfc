"""Every Python snippet of the README runs as written (each one on its own,
in a fresh folder).  The GPU array snippet runs where numba.cuda runs (the
CUDA simulator step of .ci/run, or a GPU); the CUDA-graph one needs a real
GPU and says so when skipped."""
import os
import re
import textwrap

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _python_blocks():
    """(first line number, code) of every ```python block, dedented."""
    with open(README) as f:
        lines = f.read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```python\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            out.append((start + 1, textwrap.dedent("\n".join(body))))
        i += 1
    return out


def _kind(code):
    if ".cuda()" in code or 'device="cuda"' in code:
        return "gpu"
    if "from numba import cuda" in code:
        return "cuda"
    return "cpu"


BLOCKS = _python_blocks()


def test_the_readme_has_its_snippets():
    assert len(BLOCKS) >= 6
    assert {_kind(c) for _, c in BLOCKS} == {"cpu", "cuda", "gpu"}


@pytest.mark.parametrize("line, code", [
    pytest.param(n, c, id=f"README.md:{n}",
                 marks=[pytest.mark.cuda] if _kind(c) != "cpu" else [])
    for n, c in BLOCKS])
def test_readme_snippet_runs(line, code, tmp_path, monkeypatch, capsys):
    kind = _kind(code)
    if kind != "cpu":
        cuda = pytest.importorskip("numba.cuda")
        if not cuda.is_available():
            pytest.skip("needs numba.cuda (a GPU or NUMBA_ENABLE_CUDASIM=1)")
    if kind == "gpu":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available() or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            pytest.skip("needs a real GPU (torch.cuda and numba.cuda on one device)")
    if "torch" in code:
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    if "lpcore-run/" in code:  # "after `lpcore-train`": a short run of the default command
        pytest.importorskip("sklearn")
        from lpcore_torch import cli
        assert cli.main(["--quiet", "--epochs", "2", "--out", "lpcore-run"]) == 0
        capsys.readouterr()
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
