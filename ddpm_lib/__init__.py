"""ddpm_lib: the small diffusion library of the book *From DDPM to DDIM*.

Every function cites the chapter and the equation it implements. Index convention: the code's timestep
``t`` runs over 0..T-1 and index t is the paper's step t+1.
"""

from .schedules import NoiseSchedule, cosine_beta_schedule, extract, linear_beta_schedule, sigmoid_beta_schedule
from .diffusion import (
    OBJECTIVES,
    model_predictions,
    predict_noise_from_start,
    predict_noise_from_v,
    predict_start_from_noise,
    predict_start_from_v,
    predict_v,
    q_posterior,
    q_sample,
)
from .losses import (
    discretized_gaussian_log_likelihood,
    loss_weight,
    normal_kl,
    p_losses,
    vlb_bits_per_dim,
    vlb_terms,
)
from .samplers import VARIANCES, p_mean_variance, p_sample, p_sample_loop
from .ddim import SPACINGS, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddim_timesteps
from .guidance import ClassifierFreeGuidance, ClassifierGuidance

__version__ = "0.1.0"
