"""lpcore: sparse neural-network training on the unit Lp sphere, as a fast NumPy core.

Public API (NumPy in, NumPy out; GPU arrays in, GPU arrays out, dispatched by
argument type to the numba.cuda kernels; see the README):

norms        :func:`norm`, :func:`normalize`, :func:`all_finite`
sphere       :func:`project_tangent`, :func:`retract`, :func:`to_dual`, :func:`from_dual`
ball         :func:`project_ball`
sparsity     :func:`hoyer`, :func:`hoyer_layer`, :func:`hoyer_network`, :func:`fan_in_axes`,
             :func:`participation_ratio`
optimizer    :class:`LpSGD` (state :class:`LpSGDState`; many tensors at once: :class:`StepPlan`)
GPU          :func:`cuda_stream` (the stream GPU work is enqueued on)
masks        :func:`drop_by_threshold`, :func:`grow_by_score`, :func:`drop_smallest`,
             :func:`grow_random`, :func:`random_mask`, :func:`mask_sparsity`,
             :func:`adjust_to_sparsity`
schedules    :func:`drop_threshold_schedule`, :func:`sparsity_schedule`, :func:`grow_ratio`,
             :func:`regrow_ratio`, :func:`threshold_gain`
channels     :func:`unmasked_mean_magnitude`, :func:`channel_sparsity`
methods      :func:`make_method` (``lpcore.methods``: lpss, set, rigl, static, magnitude, imp,
             scl, concave, chase; the training methods ``TRAININGS`` and
             ``training_schedule``)
learned masks :func:`ste_mask_grad`, :func:`normalize_per_feature`, :func:`concave_penalty`,
             :func:`concave_penalty_grad`, :func:`calibrate_lambda`, and the steps on
             either backend: :func:`score_step`, :func:`concave_step`,
             :func:`threshold_scores`
spectral     :func:`ramanujan_gap`, :func:`ramanujan_gaps` (the authors' gaps),
             :func:`weighted_spectral_gap`, :func:`top_singular_values`
bound        :func:`generalization_bound`, :func:`input_statistic` (Galanti et al. 2023)
gamma model  :func:`expected_hoyer`, :func:`p_for_hoyer`, :func:`fit_gamma_shape`, :func:`predict_hoyer`,
             :func:`expected_pruned_fraction`, :func:`p_for_sparsity`
"""
from . import _threads

_threads.preload_tbb()  # before any kernel: Numba then picks TBB by its own default

from .ball import project_ball  # noqa: E402
from .bound import generalization_bound, input_statistic
from .gamma import (expected_hoyer, expected_pruned_fraction, fit_gamma_shape, p_for_hoyer, predict_hoyer,
                    p_for_sparsity)
from .hoyer import hoyer, hoyer_layer, hoyer_network, participation_ratio
from .layout import fan_in_axes, group_positions, to_groups
from .masklearn import (calibrate_lambda, concave_penalty, concave_penalty_grad, concave_step,
                        normalize_per_feature, score_step, ste_mask_grad, threshold_scores)
from ._device import cuda_stream
from .norms import all_finite, norm, normalize
from .methods import make_method
from .optim import FlagSet, LpSGD, LpSGDState, StepPlan
from .spectral import ramanujan_gap, ramanujan_gaps, top_singular_values, weighted_spectral_gap
from .sphere import from_dual, project_tangent, retract, to_dual
from .channels import channel_sparsity, unmasked_mean_magnitude
from .masks import (adjust_to_sparsity, drop_by_threshold, drop_smallest, grow_by_score,
                    grow_random, mask_sparsity, random_mask)
from .schedules import (drop_threshold_schedule, grow_ratio, regrow_ratio, sparsity_schedule,
                        threshold_gain)

__version__ = "0.1.0"

__all__ = [
    "norm", "normalize", "all_finite", "to_groups", "group_positions", "project_tangent", "retract", "to_dual", "from_dual",
    "project_ball", "hoyer", "hoyer_layer", "hoyer_network", "fan_in_axes", "participation_ratio",
    "expected_hoyer", "p_for_hoyer", "fit_gamma_shape", "predict_hoyer", "expected_pruned_fraction",
    "p_for_sparsity",
    "LpSGD", "LpSGDState", "StepPlan", "FlagSet", "ramanujan_gap", "ramanujan_gaps", "weighted_spectral_gap",
    "top_singular_values", "generalization_bound", "input_statistic",
    "drop_by_threshold", "grow_by_score", "drop_smallest", "grow_random", "random_mask",
    "mask_sparsity", "adjust_to_sparsity", "drop_threshold_schedule", "grow_ratio", "regrow_ratio", "threshold_gain",
    "sparsity_schedule", "make_method", "ste_mask_grad", "normalize_per_feature", "concave_penalty",
    "concave_penalty_grad", "calibrate_lambda", "score_step", "concave_step", "threshold_scores",
    "unmasked_mean_magnitude", "channel_sparsity", "cuda_stream",
]
