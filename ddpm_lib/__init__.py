"""ddpm_lib: the small diffusion library of the book *From DDPM to DDIM*.

Every function cites the chapter and the equation it implements. Index convention: the code's timestep
``t`` runs over 0..T-1 and index t is the paper's step t+1.

The core, importable from the package itself, is the book's derivation in code: the schedules, the forward
process and its parameterizations, the training loss, the bound, the DDPM and DDIM samplers (step functions and
loops) and guidance. The modules around it — ``models``, ``data``, ``train``, ``recipes``, ``evaluation``,
``metrics``, ``classifiers``, ``exact``, ``postprocess``, ``symbolic`` — are imported by name.
"""

from ._checks import OBJECTIVES, SPACINGS, VARIANCES
from .schedules import NoiseSchedule, cosine_beta_schedule, extract, linear_beta_schedule, sigmoid_beta_schedule
from .diffusion import (
    model_predictions,
    p_mean_variance,
    predict_noise_from_start,
    predict_noise_from_v,
    predict_start_from_noise,
    predict_start_from_v,
    predict_v,
    q_posterior,
    q_sample,
)
from .losses import loss_weight, p_losses
from .likelihood import discretized_gaussian_log_likelihood, normal_kl, vlb_bits_per_dim, vlb_terms
from .samplers import ddpm_step, p_sample, p_sample_loop
from .ddim import ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddim_timesteps
from .solvers import dpm_solver_sample, heun_sample
from .guidance import ClassifierFreeGuidance, ClassifierGuidance

__version__ = "0.2.0"
