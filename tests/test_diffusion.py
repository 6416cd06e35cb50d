"""Forward process and parameterizations (chapters 01, 03, 04): identities in float64 and statistics of q_sample.

q_sample and predict_v are compared value by value with diffusers' add_noise / get_velocity in
tests/test_parity_diffusers.py; here the conversions are checked by round trips, the posterior by Bayes' rule on a
grid, and q_sample by its moments, by the step-by-step chain and by a KS test.

Statistical tolerances come from the sample size (tests/helpers.py): a sample mean of N draws with variance v is
within 5 √(v/N) of its expectation except with probability < 1e-6; a sample variance within 5 √(2 v²/(N-1)).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_lib import (
    NoiseSchedule,
    model_predictions,
    predict_noise_from_start,
    predict_noise_from_v,
    predict_start_from_noise,
    predict_start_from_v,
    predict_v,
    q_posterior,
    q_sample,
)

from helpers import F64, assert_gaussian_moments, exact_output

SCHEDULES = {
    "linear": NoiseSchedule.linear(1000),
    "cosine": NoiseSchedule.cosine(1000),
    "sigmoid": NoiseSchedule.sigmoid(1000),
    "linear20": NoiseSchedule.linear(20, 1e-3, 0.3),
}


@pytest.fixture(params=sorted(SCHEDULES))
def sched(request):
    return SCHEDULES[request.param]


def _all_t_batch(sched, d=3, seed=0):
    """x_0, ε and t covering every timestep 0..T-1 once, float64."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(sched.T)
    x0 = torch.randn(sched.T, d, generator=g, **F64)
    eps = torch.randn(sched.T, d, generator=g, **F64)
    return x0, eps, t


# ---------------------------------------------------------------- identities (float64, all t)


def test_round_trip_x0_eps_x0(sched):
    """x_0 → x_t → ε → x_0 and ε → x_0 at every t; the error bound grows with 1/√ᾱ_t (the conditioning)."""
    x0, eps, t = _all_t_batch(sched)
    xt = q_sample(sched, x0, t, eps)
    eps_back = predict_noise_from_start(sched, xt, t, x0)
    x0_back = predict_start_from_noise(sched, xt, t, eps)
    x0_back2 = predict_start_from_noise(sched, xt, t, eps_back)
    cond = (1 / sched.alphas_cumprod.sqrt() + 1 / (1 - sched.alphas_cumprod).sqrt())[:, None]
    tol = 1e-14 * cond * 10
    assert ((x0_back - x0).abs() <= tol).all()
    assert ((eps_back - eps).abs() <= tol).all()
    assert ((x0_back2 - x0).abs() <= tol).all()


def test_round_trip_v(sched):
    """v = √ᾱ ε - √(1-ᾱ) x_0; x_0 and ε come back from (x_t, v) at every t."""
    x0, eps, t = _all_t_batch(sched, seed=1)
    xt = q_sample(sched, x0, t, eps)
    v = predict_v(sched, x0, t, eps)  # its values are compared with diffusers' get_velocity in test_parity_diffusers
    torch.testing.assert_close(predict_start_from_v(sched, xt, t, v), x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(predict_noise_from_v(sched, xt, t, v), eps, rtol=1e-12, atol=1e-12)
    # (x_t, v) is a rotation of (x_0, ε): norms are preserved
    torch.testing.assert_close(xt ** 2 + v ** 2, x0 ** 2 + eps ** 2, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 300),
    beta_lo=st.floats(1e-5, 0.05),
    beta_hi=st.floats(0.05, 0.9),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2 ** 31),
)
def test_round_trips_property(T, beta_lo, beta_hi, frac, seed):
    """Random linear schedules, a random t, random x_0 and ε: every conversion inverts the other."""
    sched = NoiseSchedule.linear(T, beta_lo, beta_hi)
    t_int = min(int(frac * T), T - 1)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(5, 2, generator=g, **F64) * 3
    eps = torch.randn(5, 2, generator=g, **F64)
    t = torch.full((5,), t_int)
    xt = q_sample(sched, x0, t, eps)
    ab = sched.alphas_cumprod[t_int].item()
    tol = 1e-12 * (1 / math.sqrt(ab) + 1 / math.sqrt(1 - ab)) * 10
    assert (predict_start_from_noise(sched, xt, t, eps) - x0).abs().max() <= tol
    assert (predict_noise_from_start(sched, xt, t, x0) - eps).abs().max() <= tol
    v = predict_v(sched, x0, t, eps)
    assert (predict_start_from_v(sched, xt, t, v) - x0).abs().max() <= 1e-12 * 10
    assert (predict_noise_from_v(sched, xt, t, v) - eps).abs().max() <= 1e-12 * 10
    # an int t means the same as a full tensor
    torch.testing.assert_close(q_sample(sched, x0, t_int, eps), xt, rtol=0, atol=0)


def test_posterior_mean_eps_form_equals_x0_form(sched):
    """μ̃ = 1/√α_t (x_t - β_t/√(1-ᾱ_t) ε) (chapter 04, eq. mu-from-eps) equals μ̃(x_t, x_0) of q_posterior."""
    x0, eps, t = _all_t_batch(sched, seed=2)
    xt = q_sample(sched, x0, t, eps)
    mean, var, logvar = q_posterior(sched, x0, xt, t)
    b, a = sched.betas[:, None], sched.alphas[:, None]
    mean_eps = (xt - b / (1 - sched.alphas_cumprod[:, None]).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close(mean, mean_eps, rtol=1e-10, atol=1e-10)
    assert var.shape == (sched.T, 1) and logvar.shape == (sched.T, 1)
    torch.testing.assert_close(var[:, 0], sched.posterior_variance, rtol=0, atol=0)
    torch.testing.assert_close(logvar[:, 0], sched.posterior_log_variance_clipped, rtol=0, atol=0)


def test_posterior_is_bayes_rule(sched):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): the product of the two Gaussian densities in x_{t-1},
    evaluated on a grid, is proportional to N(μ̃, β̃) (log-density differences agree up to a constant)."""
    g = torch.Generator().manual_seed(3)
    for t_int in [1, 2, sched.T // 2, sched.T - 1]:
        x0 = torch.randn(1, 1, generator=g, **F64)
        xt = torch.randn(1, 1, generator=g, **F64)
        mean, var, _ = q_posterior(sched, x0, xt, t_int)
        a, b = sched.alphas[t_int].item(), sched.betas[t_int].item()
        acp = sched.alphas_cumprod_prev[t_int].item()
        grid = mean.item() + math.sqrt(var) * torch.linspace(-4, 4, 41, **F64)
        log_prod = (-(xt.item() - math.sqrt(a) * grid) ** 2 / (2 * b)
                    - (grid - math.sqrt(acp) * x0.item()) ** 2 / (2 * (1 - acp)))
        log_post = -(grid - mean.item()) ** 2 / (2 * var)
        diff = log_prod - log_post
        assert (diff - diff[20]).abs().max() < 1e-8 * (1 + diff.abs().max())


def test_posterior_at_t0_is_x0(sched):
    x0, eps, _ = _all_t_batch(sched)
    t = torch.zeros(sched.T, dtype=torch.long)
    xt = q_sample(sched, x0, t, eps)
    mean, var, _ = q_posterior(sched, x0, xt, t)
    torch.testing.assert_close(mean, x0, rtol=1e-13, atol=1e-13)
    assert (var == 0).all()


def test_int_t_equals_tensor_t():
    sched = SCHEDULES["cosine"]
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(6, 2, 3, generator=g, **F64)
    eps = torch.randn(6, 2, 3, generator=g, **F64)
    t = torch.full((6,), 321)
    torch.testing.assert_close(q_sample(sched, x0, 321, eps), q_sample(sched, x0, t, eps), rtol=0, atol=0)
    xt = q_sample(sched, x0, t, eps)
    m1, v1, l1 = q_posterior(sched, x0, xt, 321)
    m2, v2, l2 = q_posterior(sched, x0, xt, t)
    torch.testing.assert_close(m1, m2, rtol=0, atol=0)
    assert v1 == pytest.approx(v2.flatten()[0].item(), rel=1e-15)
    assert l1 == pytest.approx(l2.flatten()[0].item(), rel=1e-15)
    torch.testing.assert_close(predict_start_from_noise(sched, xt, 321, eps), predict_start_from_noise(sched, xt, t, eps),
                               rtol=0, atol=0)
    # t of size 1 broadcasts over the batch
    torch.testing.assert_close(q_sample(sched, x0, torch.tensor([321]), eps), q_sample(sched, x0, t, eps), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functions_return_input_dtype(dtype):
    sched = SCHEDULES["linear"]
    x0 = torch.randn(4, 3, dtype=dtype)
    eps = torch.randn(4, 3, dtype=dtype)
    t = torch.tensor([0, 10, 500, 999])
    xt = q_sample(sched, x0, t, eps)
    outs = [xt, q_posterior(sched, x0, xt, t)[0], q_posterior(sched, x0, xt, t)[1],
            predict_start_from_noise(sched, xt, t, eps), predict_noise_from_start(sched, xt, t, x0),
            predict_v(sched, x0, t, eps), predict_start_from_v(sched, xt, t, eps), predict_noise_from_v(sched, xt, t, eps)]
    for o in outs:
        assert o.dtype == dtype


# ---------------------------------------------------------------- model_predictions


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_model_predictions_with_exact_model(sched, objective):
    """A model that outputs the exact target of its objective gives back (ε, x_0)."""
    x0, eps, t = _all_t_batch(sched, seed=5)
    x0 = x0.clamp(-0.9, 0.9)
    xt = q_sample(sched, x0, t, eps)
    target = exact_output(sched, objective, x0, t, eps)
    calls = []

    def model(x, tt):
        calls.append(tt)
        assert torch.equal(x, xt) and torch.equal(tt, t)
        return target

    cond = (1 / sched.alphas_cumprod.sqrt() + 1 / (1 - sched.alphas_cumprod).sqrt())[:, None]
    for clip in (False, True):  # |x_0| < 1 so clipping changes nothing
        pred_noise, pred_x0 = model_predictions(model, sched, xt, t, objective, clip_x_start=clip)
        assert ((pred_x0 - x0).abs() <= 1e-13 * cond).all()
        assert ((pred_noise - eps).abs() <= 1e-13 * cond).all()
    assert len(calls) == 2


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_model_predictions_clipping_rederives_noise(objective):
    """With clip_x_start, x̂_0 is clamped and ε̂ re-derived so that √ᾱ x̂_0 + √(1-ᾱ) ε̂ = x_t still holds."""
    sched = SCHEDULES["linear"]
    g = torch.Generator().manual_seed(6)
    t = torch.tensor([5, 100, 400, 900])
    xt = 3 * torch.randn(4, 8, generator=g, **F64)
    out = 3 * torch.randn(4, 8, generator=g, **F64)
    _, x0_raw = model_predictions(None, sched, xt, t, objective, model_output=out)
    assert (x0_raw.abs() > 1).any()
    pred_noise, x0 = model_predictions(None, sched, xt, t, objective, clip_x_start=True, model_output=out)
    torch.testing.assert_close(x0, x0_raw.clamp(-1, 1), rtol=0, atol=0)
    recon = q_sample(sched, x0, t, pred_noise)
    torch.testing.assert_close(recon, xt, rtol=1e-12, atol=1e-12)


def test_model_predictions_passes_label():
    sched = SCHEDULES["linear20"]
    seen = {}

    def model(x, t, y):
        seen["y"] = y
        return torch.zeros_like(x) + y[:, None].to(x)

    xt = torch.zeros(3, 2, **F64)
    y = torch.tensor([1, 2, 3])
    eps, _ = model_predictions(model, sched, xt, 4, "pred_noise", y=y)
    assert seen["y"] is y
    torch.testing.assert_close(eps, y[:, None].to(eps).expand(3, 2), rtol=0, atol=0)


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t_int", [0, 1, 100, 500, 999])
def test_q_sample_moments(name, t_int):
    """x_t ~ N(√ᾱ_t x_0, (1-ᾱ_t) I): sample mean and variance per coordinate within 5 standard errors."""
    sched = SCHEDULES[name]
    N = 100_000
    x0 = torch.tensor([-1.0, -0.3, 0.0, 0.7, 1.0], **F64)
    g = torch.Generator().manual_seed(10 + t_int)
    noise = torch.randn(N, 5, generator=g, **F64)
    xt = q_sample(sched, x0.expand(N, 5), torch.full((N,), t_int), noise)
    ab = sched.alphas_cumprod[t_int].item()
    assert_gaussian_moments(xt, math.sqrt(ab) * x0, 1 - ab)
    # independence of coordinates: correlations within 5/√N of 0
    corr = torch.corrcoef(xt.T) - torch.eye(5, **F64)
    assert corr.abs().max() <= 5 / math.sqrt(N)


def _ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a - F_b| (samples without ties)."""
    both = torch.cat([a, b])
    order = torch.argsort(both)
    steps = torch.where(order < len(a), 1.0 / len(a), -1.0 / len(b)).to(torch.float64)
    return torch.cumsum(steps, 0).abs().max().item()


def _ks_critical(n: int, m: int, alpha: float = 1e-4) -> float:
    """Asymptotic critical value c(α) √((n+m)/(nm)), c(α) = √(-ln(α/2)/2)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_forward_chain_matches_q_sample(name, one_thread):
    """x_t = √α_t x_{t-1} + √(1-α_t) ε run step by step has the law of q_sample(x_0, t) (chapter 01, by induction).

    x_0 is drawn from a two-point distribution (±0.8) so that x_t is a non-Gaussian mixture at small t.
    Compared at several t: the mean and variance (5 standard errors) and a two-sample KS test at level 1e-4.
    The same KS test rejects the chain against q_sample at a wrong t (it has power).
    """
    sched = SCHEDULES[name]
    N = 20_000
    g = torch.Generator().manual_seed(7)
    x0 = torch.where(torch.rand(N, generator=g) < 0.3, -0.8, 0.8).to(torch.float64)
    checkpoints = {0, 5, 50, 200, 600, 999}
    x = x0.clone()
    chain = {}
    for t in range(sched.T):
        a = sched.alphas[t].item()
        x = math.sqrt(a) * x + math.sqrt(1 - a) * torch.randn(N, generator=g, **F64)
        if t in checkpoints:
            chain[t] = x.clone()
    crit = _ks_critical(N, N)
    for t, xc in chain.items():
        direct = q_sample(sched, x0[:, None], torch.full((N,), t), torch.randn(N, 1, generator=g, **F64))[:, 0]
        ab = sched.alphas_cumprod[t].item()
        # population moments of x_0: P(-0.8) = 0.3, P(0.8) = 0.7
        mean = math.sqrt(ab) * 0.8 * (0.7 - 0.3)
        var = ab * (0.64 - (0.8 * 0.4) ** 2) + 1 - ab
        assert abs(xc.mean().item() - mean) <= 5 * math.sqrt(var / N)
        m4 = ((xc - xc.mean()) ** 4).mean().item()  # Var(s²) ≈ (μ_4 - σ⁴)/N
        assert abs(xc.var().item() - var) <= 5 * math.sqrt((m4 - var ** 2) / N)
        assert _ks_statistic(xc, direct) <= crit, t
    # power: at t=5 the chain is clearly not q(x_50 | x_0)
    wrong = q_sample(sched, x0[:, None], torch.full((N,), 50), torch.randn(N, 1, generator=g, **F64))[:, 0]
    if name == "linear":
        assert _ks_statistic(chain[5], wrong) > crit


def test_q_sample_draws_noise_when_none():
    sched = SCHEDULES["linear"]
    torch.manual_seed(0)
    x0 = torch.zeros(50_000, 1, **F64)
    xt = q_sample(sched, x0, torch.full((50_000,), 999))
    assert abs(xt.std().item() - math.sqrt(1 - sched.alphas_cumprod[999].item())) < 5 * math.sqrt(0.5 / 50_000)
