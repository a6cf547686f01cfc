"""Numba kernels.  Internal: they compute and never validate.

The kernel contract, shared by these CPU kernels and their CUDA twins in
:mod:`lpcore.kernels.cuda` (same module names, function names, arguments and
return conventions; the public functions call ``backend.kernels.<name>``):

Arrays are C-contiguous 2-D ``(G, n)`` views (one group = one row = one
neuron's fan-in) in float32 or float64; per-group results are 1-D.  Each
kernel compiles one signature per dtype.

``norm.group_norms(x, p, out_dtype=None) -> (norms, first_bad, first_zero)``
    Lp norms of the rows (max-scaled), NaN for a row holding NaN/Inf and Inf
    for one whose norm overflows ``out_dtype``; ``first_bad`` is the first row
    with a non-finite norm, ``first_zero`` the first zero norm, ``G`` for
    none.  ``out_dtype=None``: float64 norms for the caller's own use (a
    scratch buffer on the GPU, valid until the thread's next call).
``norm.group_max(x) -> (max |x| per row as float64, first_bad, first_zero)``
``norm.scale_rows(x, nrm, out)``
    ``out = x / nrm[:, None]`` (0 where nrm is 0); ``out`` may be ``x``.
``hoyer.hoyer_sums(x, out_dtype) -> (hoyer, first_bad)``   rows of n >= 2.
``tangent.tangent_coef(w, g, mw, p) -> (coef, first_bad)``
    ``<nu, g> / <nu, nu>`` with ``nu = sign(w) (|w| / mw)^(p-1)`` (``mw > 0``).
``tangent.tangent_write(w, g, mw, coef, p, out)``   ``out = g - coef * nu``.
``dual.signed_pow(x, e, out) -> first flat index holding NaN/Inf, or -1``
    ``out = sign(x) |x|^e`` on 1-D contiguous arrays.
``ball.project_ball_rows(y, m, kind, p, r, out)``   rows of max |y| = m.
``lpsgd.Tables(dtype, rows, base=0)``   (host, shared by both targets)
    the tensor table of a multi-tensor LpSGD step: per tensor the addresses
    of w, its gradient, momentum buffer, dual state and mask (C-contiguous
    (G, n); gradient of w's dtype, mask one byte per entry), G, n, the
    hyperparameters and the counters (step, momentum started).
``lpsgd.MultiStep(tables, variant, has_mom, guard=None)``
    ``.run(check, what="step" | "phase1" | "phase2", flag=0) -> (-1, None) or
    (first bad global group, status)``: every group of every tensor stepped,
    or nothing written; the setters ``set_grad``, ``set_mask``, ``set_lr``,
    ``set_counters`` change one tensor's entry; ``counters()``; the GPU
    twin's ``check`` modes and guard are described in its module.
``layout.add(a, b, out)``, ``layout.fill(out, v)``
``topology.drop_rows(w, m, h, out, revive=False) -> (tau, first_bad, n_dropped)``
    semi-pruning's drop rule per row into the boolean ``out`` (``m``
    boolean); ``tau`` the thresholds (NaN for a row with a non-finite weight
    taking part, whose ``out`` row is unset); on the GPU the one copy to the
    host is those two integers.
``topology.inactive_count(m1) -> int``   False entries of a 1-D boolean array.
``topology.grow_keys(s, nrm, n, out)``   ``out = |s| / (nrm / n)`` per row (0
    where that mean is 0), float64: grow_by_score's normalised scores.
``topology.select_keys(keys, m1, k, active=False) -> (m1 XOR selected, indices)``
    the ``k`` largest non-negative float64 ``keys`` (1-D) where ``m1`` is
    False (``active=True``: the ``k`` smallest where it is True), ties to the
    lower index; the indices increasing (an int64 device array on the GPU,
    whose selection copies nothing to the host).
``topology.magnitudes(x1, m1, among, out) -> int``   ``out = |x1|`` where
    ``m1 == among``, 0 elsewhere (1-D; ``out`` float32 or float64); the
    number of those entries holding NaN/Inf (on the GPU the one copy).
``topology.grow_at(m1, ranks, n_free) -> (m1 | grown, indices)``   the
    inactive entries of the increasing host ``ranks`` (0 = the first False
    entry; ``n_free`` False entries) activated; their positions increasing.
``topology.copy_mask(src, dst)``   1-D boolean copy.
``topology.activated(new, a, b) -> indices``   the positions where the 1-D
    boolean ``new`` is True and ``a & b`` False, increasing (on the GPU an
    int64 device array; the one copy to the host is its length).
``topology.live_rows(m, out) -> rows without a True entry``,
``topology.row_umm(w, m, out) -> first row with a NaN/Inf active weight, or G``,
``topology.fill_rows(m, rows, on, value, out) -> entries changed``   Chase's
    channel steps on (G, n) masks: which rows live, the unmasked mean
    magnitude per row, whole rows set.
``masklearn.score_step(s, g, th, lr, out) -> (first bad row of g, of th)``
    SCL's ``out = s - lr * N(g * th)`` (``N``: unit RMS per row, the product
    rounded to the data's dtype; ``g`` None: ``out = s``); ``out`` unset
    when a row is bad.
``masklearn.concave_step(m, g, th, lr, lam, kind_log, eps, out) -> (rows of m, g, th)``
    ``out = clip(m - lr (lam R'(m) + g th), 0, 1)``; the first rows of
    ``m`` outside [0, 1] and of ``g``, ``th`` non-finite (``G``: none).
``masklearn.kth_smallest(a1, k) -> float``, ``masklearn.count_at_most(a1, v,
    c) -> (#(a1 <= v), #(a1 - c <= 0))``, ``masklearn.nonfinite_count(a1)``
    the order statistic and counts of ``calibrate_lambda`` (1-D float64).
``masklearn.shift(a1, c, out)``, ``masklearn.positive(s1, out)``,
    ``masklearn.tiers(m1, v, below, tied) -> #below``,
    ``masklearn.keep_above(below, tied, tied_kept, out)``   elementwise 1-D
    pieces of SCL's scores and gates and of the ticket's threshold.

Writing kernels run only after the reductions that validate their inputs.
Long groups are cut into ``CHUNK``-element tasks so that ``axis=None`` on a
big tensor still uses every core; each task writes its own partial results
(no atomics, no races) and a serial pass merges them.  Each CPU kernel is a
task function made into a ``parallel=True`` driver and a serial one by
:class:`_dispatch.TaskKernel`, which chooses between them by problem size
(one rule, :func:`_dispatch.use_parallel`).
"""
from ._dispatch import CHUNK, PAR_MIN_SIZE
from .ball import project_ball_rows
from .dual import signed_pow
from .hoyer import hoyer_sums
from .layout import add, fill
from .lpsgd import MultiStep, Tables
from .masklearn import (concave_step, count_at_most, keep_above, kth_smallest, nonfinite_count,
                        positive, score_step, shift, tiers)
from .norm import (KIND_INF, KIND_GEN, KIND_ONE, KIND_TWO, group_max, group_norms, norm_kind,
                   scale_rows)
from .tangent import tangent_coef, tangent_write
from .topology import (activated, copy_mask, drop_rows, fill_rows, grow_at, grow_keys,
                       inactive_count, live_rows, magnitudes, row_umm, select_keys)

__all__ = [
    "CHUNK", "PAR_MIN_SIZE", "KIND_ONE", "KIND_TWO", "KIND_INF", "KIND_GEN", "norm_kind",
    "group_norms", "group_max", "scale_rows", "hoyer_sums", "tangent_coef", "tangent_write",
    "signed_pow", "project_ball_rows", "add", "fill", "MultiStep", "Tables", "drop_rows",
    "inactive_count", "grow_keys", "select_keys", "magnitudes", "grow_at", "copy_mask",
    "activated", "live_rows", "row_umm", "fill_rows", "score_step", "concave_step", "kth_smallest", "count_at_most",
    "nonfinite_count", "shift", "positive", "tiers", "keep_above",
]
