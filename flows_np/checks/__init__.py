"""Argument checks shared by both backends: one home for each rule and its error message.

The numpy package (:mod:`flows_np`) and its PyTorch twin (:mod:`flows_torch`) take the
same arguments and must refuse the same bad ones with the same words. The rules live
here, written once in plain numpy (no torch), and both packages import them:

* :func:`check_positive_int` (epochs, batch sizes, step counts, ...);
* :func:`check_coupling_architecture` (the normalizing flow's coupling layers);
* :func:`check_learning_rate`, :func:`check_clip_grad` (the training loops);
* :func:`check_labels`: class labels of a batch of ``n`` points against a model's
  ``num_classes`` (shape ``(n,)``, integers in ``[0, num_classes)``);
* :func:`check_point_facts`: a batch of points, judged from backend-neutral facts
  (shape, dtype, whether the values are finite), so that the torch side applies the
  same rule to a tensor without copying it; :func:`check_points` is that rule for arrays;
* :func:`check_permutation` (a permutation layer's index buffer), :func:`check_state_entries`
  (weights to save or load: real and finite), :func:`check_config` (a checkpoint's recorded
  architecture against the model's), :func:`check_backend` (an object of the other backend);
* :func:`check_eta_min`, :func:`check_adam_lr` (the training loops), :data:`MAX_STEPS` and
  :func:`check_finite_step` (the samplers), :func:`check_nonempty`, :func:`check_real`.

A torch caller converts a tensor of labels with ``labels.detach().cpu().numpy()``
(once per call, not per step) or reports its points' facts; see
:func:`flows_torch.solvers.check_labels_tensor` and :func:`flows_torch.solvers.check_points`.
Every check raises :class:`ValueError` naming the argument and what was wrong, except
:func:`check_finite_step` (a sampler's field or state gone NaN/inf: :class:`FloatingPointError`).
The module imports numpy (and the standard library) only.
"""
from __future__ import annotations

from .values import (  # noqa: F401
    MAX_STEPS,
    array_entries,
    as_array,
    backend_of,
    check_adam_lr,
    check_backend,
    check_clip_grad,
    check_config,
    check_coupling_architecture,
    check_eta_min,
    check_finite_step,
    check_integer,
    check_labels,
    check_learning_rate,
    check_nonempty,
    check_permutation,
    check_point_facts,
    check_points,
    check_positive_int,
    check_positive_number,
    check_real,
    check_real_array,
    check_state_entries,
)
from .paths import (  # noqa: F401
    NUMPY_GENERATOR,
    TIME_EMBEDDINGS,
    as_normals,
    as_times,
    as_uniforms,
    batch_times,
    check_field_input,
    check_finite,
    check_integer_labels,
    check_mean_std,
    check_model_dim,
    check_pair,
    check_path_noise_facts,
    check_random_source,
    check_same_shape,
    check_sigma,
    check_time_dtype,
    check_time_facts,
    check_unit_interval,
    check_velocity_architecture,
    coupling_inputs,
    fm_loss_inputs,
    is_library_model,
    logit_normal_inputs,
    maths_of,
    model_labels,
    path_inputs,
    per_point,
    time_sampler_inputs,
    velocity_inputs,
)
from .samplers import (  # noqa: F401
    DOPRI5_ATOL,
    DOPRI5_MAX_STEPS,
    DOPRI5_RTOL,
    as_target,
    bonus_inputs,
    check_adaptive_run,
    check_divergence_output,
    check_energy_shapes,
    check_field_output,
    check_method,
    check_min_gap,
    check_nll_options,
    check_noise_scale,
    check_score_facts,
    check_sde_randomness,
    check_sde_step,
    check_steps,
    check_student,
    check_target_facts,
    check_time_interval,
    check_tolerance,
    divergence_inputs,
    energy_inputs,
    few_step_inputs,
    log_prob_inputs,
    nll_inputs,
    noise_scale_value,
    ode_inputs,
    ode_state_inputs,
    pairs_inputs,
    score_dtype,
    score_inputs,
    score_time,
    sde_inputs,
    solver_choice,
)
from .flows import (  # noqa: F401
    SPLINE_INPUTS,
    check_flag,
    check_flow_architecture,
    check_flow_points,
    check_fused_layers,
    check_fused_velocity,
    check_permutations,
    check_real_number,
    check_spline_architecture,
    check_spline_facts,
    check_spline_options,
    spline_inputs,
)
from .training import (  # noqa: F401
    as_array_tuple,
    check_batch_lengths,
    check_callables,
    check_ema_decay,
    check_ema_model,
    check_ema_warmup,
    check_fraction,
    check_nonnegative_number,
    ema_decay_inputs,
    ema_inputs,
    model_points,
    progress_event_kind,
)
from .oracle import (  # noqa: F401
    as_real_values,
    check_affine_path,
    check_oracle_time,
    mixture_covariances,
    oracle_inputs,
    oracle_query,
    oracle_sample_inputs,
    rings_oracle_inputs,
)
from ..named import ADAPTIVE_METHODS  # noqa: F401

__all__ = ["as_array", "check_positive_int", "check_coupling_architecture", "check_learning_rate", "check_clip_grad", "check_labels",
           "check_point_facts", "check_points", "check_permutation", "check_eta_min", "check_adam_lr", "check_nonempty",
           "check_real", "check_real_array", "backend_of", "check_backend", "check_state_entries", "array_entries",
           "check_finite_step", "check_config", "MAX_STEPS", "oracle_inputs", "oracle_query",
           "oracle_sample_inputs", "solver_choice", "check_adaptive_run"]
