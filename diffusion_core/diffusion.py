"""`GaussianDiffusion`: the forward process, its posterior, the reverse model's
Gaussian, the training losses and the variational bound in bits/dim.

Equation numbers refer to DDPM (Ho et al. 2020) unless "iDDPM" (Nichol &
Dhariwal 2021) is named. Timesteps are 0-based: index t is the paper's t+1, so
the paper's L_0 (the decoder) is at index 0 and L_T (the prior) follows index T-1.

`model(x_t, t)` is any callable taking a batch (B, C, ...) and integer
timesteps (B,) and returning ε̂ with C channels, or ε̂ and a variance output v
with 2C channels (`model_var` "learned_range" or "learned"). With
`model_mean="mean"` the network predicts the posterior mean μ̃ instead of ε
(DDPM's baseline in its Table 2).

Public methods check their inputs once and call unchecked internals (`_q_sample`,
`_vb_terms`, ...), which a training step uses directly: they never read a tensor
back to the host, and they take the schedule's tables from a per-device cache, so
a step on a GPU never waits on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ._checks import check_batched, check_float, check_in_unit_range, check_same_shape, check_timesteps
from .distributions import _discretized_gaussian_log_likelihood, _normal_kl
from .schedules import Schedule, respace, space_timesteps

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MODEL_VARS = ("fixed_small", "fixed_large", "learned_range", "learned")
LEARNED_VARS = ("learned_range", "learned")  # the network outputs a variance: 2C channels
MODEL_MEANS = ("eps", "mean")
LOSS_TYPES = ("simple", "vlb", "hybrid")


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


class GaussianDiffusion:
    """Gaussian diffusion with a fixed schedule (DDPM) and its variational bound.

    model_var: the reverse variance Σ_θ(x_t, t) = σ_t² I.
        "fixed_small"   σ_t² = β̃_t (the posterior variance; DDPM's lower bound choice)
        "fixed_large"   σ_t² = β_t (with β̃_1 at t = 0, so the decoder is not too wide)
        "learned_range" log σ_t² = v log β_t + (1 - v) log β̃_t, v = (model output + 1)/2 (iDDPM eq. 15)
        "learned"       log σ_t² = the model output (DDPM's "learned diagonal Σ", its Table 2)
    model_mean: what the network's first C channels predict.
        "eps"   the noise ε; μ_θ = μ̃_t(x̂_0(ε̂), x_t) (eq. 11; DDPM's choice)
        "mean"  the posterior mean μ̃_t itself (DDPM's baseline, eq. 8)
    num_levels: grey levels of the data, for the discrete decoder L_0 (256 for
        8-bit images, 17 for sklearn digits).
    timestep_map: the model's timestep for each of this process's steps; a
        respaced process (`respaced`) calls the model with the original timesteps.
    """

    def __init__(self, schedule: Schedule, model_var: str = "fixed_small", num_levels: int = 256,
                 timestep_map: torch.Tensor | None = None, model_mean: str = "eps"):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule (see make_schedule), got {type(schedule).__name__}")
        if model_var not in MODEL_VARS:
            raise ValueError(f"model_var must be one of {MODEL_VARS}, got {model_var!r}")
        if model_mean not in MODEL_MEANS:
            raise ValueError(f"model_mean must be one of {MODEL_MEANS}, got {model_mean!r}")
        self.model_mean = model_mean
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")
        self.schedule = schedule
        self.model_var = model_var
        self.num_levels = num_levels
        self.timestep_map = torch.arange(schedule.T) if timestep_map is None else timestep_map.long()
        if self.timestep_map.shape != (schedule.T,):
            raise ValueError(f"timestep_map must have shape (T,) = ({schedule.T},), "
                             f"got {tuple(self.timestep_map.shape)}")
        # float64 on the CPU like the schedule's, and the model timesteps (long)
        self.tables = {**_derived_tables(schedule), "timestep_map": self.timestep_map}
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """tables[name] on `device` in `dtype`, copied there once and then kept.

        Casting the float64 table before indexing it gives the same values as
        indexing first, so the cache changes no result, only where the copy happens.
        """
        key = (name, device, dtype)
        if key not in self._cache:
            self._cache[key] = self.tables[name].to(device=device, dtype=dtype)
        return self._cache[key]

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """tables[name][t] shaped (B, 1, ..., 1) to broadcast against `like` (B, ...)."""
        out = self._table(name, like.device, like.dtype)[t]
        return out.reshape(t.shape[0], *([1] * (like.dim() - 1)))

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def learns_variance(self) -> bool:
        return self.model_var in LEARNED_VARS

    def __repr__(self) -> str:
        mean = f", model_mean={self.model_mean!r}" if self.model_mean != "eps" else ""
        return (f"GaussianDiffusion(T={self.T}, model_var={self.model_var!r}, "
                f"num_levels={self.num_levels}{mean})")

    def respaced(self, num_steps: int) -> GaussianDiffusion:
        """The same process on `num_steps` evenly strided timesteps (iDDPM section 4)."""
        kept = space_timesteps(self.T, num_steps)
        if self.model_mean == "mean" and len(kept) < self.T:
            # μ̂ is the posterior mean of the network's own one-step posterior; a longer
            # stride has another posterior, which no network output gives.
            raise ValueError(f"num_steps must be {self.T} (all steps) for a network that "
                             f"predicts μ̃ (model_mean='mean'), got {num_steps}: respacing "
                             "needs a prediction of ε or x_0")
        return GaussianDiffusion(respace(self.schedule, kept), self.model_var, self.num_levels,
                                 timestep_map=self.timestep_map[kept], model_mean=self.model_mean)

    # ---- checks at the public boundary -------------------------------------------------

    def _check_x_t(self, x: torch.Tensor, t: torch.Tensor, name: str = "x0") -> torch.Tensor:
        check_float(x, name)
        check_batched(x, name)
        return check_timesteps(t, self.T, batch=x.shape[0])

    def _check_output(self, eps: torch.Tensor, v: torch.Tensor | None, like: torch.Tensor) -> None:
        check_float(eps, "eps")
        check_same_shape(eps, like, "eps", "x_t")
        if self.learns_variance:
            if v is None:
                raise ValueError(f"v is required with model_var={self.model_var!r} "
                                 "(the network's variance output, shaped like x_t)")
            check_float(v, "v")
            check_same_shape(v, like, "v", "x_t")
        elif v is not None:
            raise ValueError(f"v must be None with model_var={self.model_var!r} "
                             "(only 'learned_range' and 'learned' have a variance output)")

    # ---- the forward process q ----------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (eq. 4): (mean, variance, log variance)."""
        t = self._check_x_t(x0, t)
        return self._q_mean_variance(x0, t)

    def _q_mean_variance(self, x0, t):
        mean = self._at("sqrt_alphas_cumprod", t, x0) * x0
        variance = self._at("one_minus_alphas_cumprod", t, x0).expand_as(x0)
        log_variance = self._at("log_one_minus_alphas_cumprod", t, x0).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """A draw from q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, ε ~ N(0, I)."""
        t = self._check_x_t(x0, t)
        if noise is None:
            noise = torch.randn_like(x0)
        check_float(noise, "noise")
        check_same_shape(noise, x0, "noise", "x0")
        return self._q_sample(x0, t, noise)

    def _q_sample(self, x0, t, noise):
        return self._at("sqrt_alphas_cumprod", t, x0) * x0 + \
            self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (eq. 6-7): (mean, variance, clipped log variance)."""
        t = self._check_x_t(x0, t)
        check_float(x_t, "x_t")
        check_same_shape(x_t, x0, "x_t", "x0")
        return self._posterior(x0, x_t, t)

    def _posterior(self, x0, x_t, t):
        mean = self._at("posterior_mean_coef1", t, x_t) * x0 + self._at("posterior_mean_coef2", t, x_t) * x_t
        variance = self._at("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._at("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ---- conversions between ε, x_0 and the posterior mean -------------------------------

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4: x_0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t."""
        return (x_t - self._at("sqrt_one_minus_alphas_cumprod", t, x_t) * eps) / \
            self._at("sqrt_alphas_cumprod", t, x_t)

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Solve eq. 4 for the noise: ε = (x_t - √ᾱ_t x_0) / √(1 - ᾱ_t)."""
        return (x_t - self._at("sqrt_alphas_cumprod", t, x_t) * x0) / \
            self._at("sqrt_one_minus_alphas_cumprod", t, x_t)

    def mean_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Eq. 11: μ_θ = 1/√α_t · (x_t - β_t/√(1 - ᾱ_t) · ε̂); equals μ̃_t(x̂_0(ε̂), x_t)."""
        return (x_t - self._at("eps_coef", t, x_t) * eps) / self._at("sqrt_alphas", t, x_t)

    # ---- the reverse process p_θ ----------------------------------------------------------

    def model_output(self, model: Model, x_t: torch.Tensor, t: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Call the model with its own timesteps; split its mean output (ε̂, or μ̂ with
        model_mean="mean") and v: ((B, C, ...), (B, C, ...) or None)."""
        out = model(x_t, self._table("timestep_map", t.device, torch.long)[t])
        C = x_t.shape[1]
        want = 2 * C if self.learns_variance else C
        if not isinstance(out, torch.Tensor) or out.shape != (x_t.shape[0], want, *x_t.shape[2:]):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model output must have shape {(x_t.shape[0], want, *x_t.shape[2:])} "
                             f"(model_var={self.model_var!r}), got {got}")
        out = out.to(x_t.dtype)
        if self.learns_variance:
            eps, v = out.split(C, dim=1)
            return eps, v
        return out, None

    def reverse_log_variance(self, v: torch.Tensor | None, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """log σ_t² of p_θ(x_{t-1} | x_t), shaped like `like`."""
        if self.model_var == "fixed_small":
            return self._at("posterior_log_variance_clipped", t, like).expand_as(like)
        if self.model_var == "fixed_large":
            return self._at("log_fixed_large", t, like).expand_as(like)
        if self.model_var == "learned":
            return v
        frac = (v + 1.0) / 2.0  # iDDPM eq. 15, v from the network mapped to [0, 1]
        return frac * self._at("log_betas", t, like) + \
            (1.0 - frac) * self._at("posterior_log_variance_clipped", t, like)

    def p_mean_variance(self, model: Model, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """p_θ(x_{t-1} | x_t) = N(μ_θ, σ_t² I), with μ_θ = μ̃_t(x̂_0, x_t).

        x̂_0 is computed from ε̂ and, if `clip_denoised`, clipped to [-1, 1]
        (the data range; this keeps early samples from drifting). Returns a dict
        with mean, variance, log_variance, pred_x0, eps, all shaped like x_t.
        """
        t = self._check_x_t(x_t, t, name="x_t")
        return self._p_mean_variance(model, x_t, t, clip_denoised)

    def _p_mean_variance(self, model, x_t, t, clip_denoised):
        eps, v = self.model_output(model, x_t, t)
        return self._p_from_output(x_t, t, eps, v, clip_denoised)

    def _p_from_output(self, x_t, t, out, v, clip_denoised):
        """p_θ(x_{t-1} | x_t) from the network's output (ε̂ or μ̂, and v), no network call."""
        log_variance = self.reverse_log_variance(v, t, x_t)
        if self.model_mean == "eps":
            eps = out
            pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
            if clip_denoised:
                pred_x0 = pred_x0.clamp(-1.0, 1.0)
            mean, _, _ = self._posterior(pred_x0, x_t, t)
        else:  # the network gives μ̂ itself; x̂_0 and ε̂ are read off it (eq. 7 solved for x_0)
            mean = out
            pred_x0 = (mean - self._at("posterior_mean_coef2", t, x_t) * x_t) / \
                self._at("posterior_mean_coef1", t, x_t)
            eps = self.predict_eps_from_x0(x_t, t, pred_x0)
            if clip_denoised:  # for the samplers' x̂_0; the mean stays the network's
                pred_x0 = pred_x0.clamp(-1.0, 1.0)
        return {"mean": mean, "variance": log_variance.exp(), "log_variance": log_variance,
                "pred_x0": pred_x0, "eps": eps}

    # ---- the variational bound, in bits per dimension --------------------------------------

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in bits/dim: (B,).

        It has no parameters: with a fixed schedule it is a constant of the data.
        """
        check_float(x0, "x0")
        check_batched(x0, "x0")
        return self._prior_bpd(x0)

    def _prior_bpd(self, x0):
        t = torch.full((x0.shape[0],), self.T - 1, dtype=torch.long, device=x0.device)
        mean, _, log_variance = self._q_mean_variance(x0, t)
        kl = _normal_kl(mean, log_variance, torch.zeros_like(mean), torch.zeros_like(mean))
        return mean_flat(kl) / math.log(2.0)

    def vb_terms_bpd(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                     v: torch.Tensor | None = None, clip_denoised: bool = True
                     ) -> dict[str, torch.Tensor]:
        """One term of the bound per example, in bits/dim, from the network's output at (x_t, t).

        Index t is the paper's t+1 (see the module docstring), so:
        t > 0: KL(q(x_t' | x_t, x_0) || p_θ(x_t' | x_t)), x_t' the step before x_t  (eq. 5)
        t = 0: -log p_θ(x_0 | x_1), the discrete decoder                              (eq. 13)
        eps (B, C, ...) is ε̂ and v the variance output (learned_range only), as
        `model_output` returns them: one network call serves the loss and the bound.
        Returns {"output": (B,) bits/dim, "pred_x0": x̂_0 shaped like x_t}.
        """
        t = self._check_x_t(x0, t)
        check_float(x_t, "x_t")
        check_same_shape(x_t, x0, "x_t", "x0")
        self._check_output(eps, v, x_t)
        if bool((t == 0).any()):
            check_in_unit_range(x0[t == 0], "x0")
        return self._vb_terms(x0, x_t, t, eps, v, clip_denoised)

    def _vb_terms(self, x0, x_t, t, eps, v, clip_denoised, all_first: bool | None = None):
        """`all_first`: True if every t is 0, False if none is, None if not known on the host."""
        out = self._p_from_output(x_t, t, eps, v, clip_denoised)
        if all_first is not True:
            true_mean, _, true_log_variance = self._posterior(x0, x_t, t)
            kl = mean_flat(_normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"]))
        if all_first is not False:
            decoder_nll = -mean_flat(_discretized_gaussian_log_likelihood(
                x0, out["mean"], 0.5 * out["log_variance"], self.num_levels))
        if all_first is None:
            # Both terms for every example, each kept where it belongs: selecting the rows
            # with t = 0 first would need their count on the host.
            bpd = torch.where(t == 0, decoder_nll, kl)
        else:
            bpd = decoder_nll if all_first else kl
        return {"output": bpd / math.log(2.0), "pred_x0": out["pred_x0"]}

    def training_losses(self, model: Model, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None, loss_type: str = "simple",
                        hybrid_lambda: float = 1e-3) -> dict[str, torch.Tensor]:
        """Per-example losses (B,) for a batch at timesteps t.

        "simple": L_simple = ‖ε - ε̂(x_t, t)‖² averaged over dimensions (eq. 14);
            with model_mean="mean" the unweighted ‖μ̃_t - μ̂‖² (Table 2's third row).
            With learned variances it adds the hybrid term below (the variance
            has nothing else to learn from).
        "hybrid": L_simple + λ · L_vlb with the mean's gradient stopped in L_vlb
            (iDDPM eq. 16). L_vlb is estimated from this t as T · L_t, each term
            in bits/dim, so λ T = 1 at T = 1000 and λ = 0.001.
        "vlb": T · L_t, an unbiased one-sample estimate of the whole bound.
        Returns a dict with "loss", "mse" and, when used, "vb" (the term L_t).
        The network is called once.
        """
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        t = self._check_x_t(x0, t)
        if noise is None:
            noise = torch.randn_like(x0)
        check_float(noise, "noise")
        check_same_shape(noise, x0, "noise", "x0")
        if loss_type != "simple" or self.learns_variance:
            check_in_unit_range(x0, "x0")  # the bound's decoder scores x0 on the data's levels
        return self._training_losses(model, x0, t, noise, loss_type, hybrid_lambda)

    def _training_losses(self, model, x0, t, noise, loss_type="simple", hybrid_lambda=1e-3):
        x_t = self._q_sample(x0, t, noise)
        eps, v = self.model_output(model, x_t, t)  # ε̂, or μ̂ with model_mean="mean"
        target = noise if self.model_mean == "eps" else self._posterior(x0, x_t, t)[0]
        terms = {"mse": mean_flat((target - eps) ** 2)}
        if loss_type == "vlb":
            terms["vb"] = self._vb_terms(x0, x_t, t, eps, v, clip_denoised=True)["output"]
            terms["loss"] = terms["vb"] * self.T
            return terms
        terms["loss"] = terms["mse"]
        if loss_type == "hybrid" or self.learns_variance:
            # The bound trains only the variance: it sees ε̂ detached and v live.
            terms["vb"] = self._vb_terms(x0, x_t, t, eps.detach(), v, clip_denoised=True)["output"]
            terms["loss"] = terms["loss"] + hybrid_lambda * self.T * terms["vb"]
        return terms

    @torch.no_grad()
    def calc_bpd_loop(self, model: Model, x0: torch.Tensor, clip_denoised: bool = True,
                      progress: bool = False, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
        """The whole bound for each example: L_T + Σ_{t≥1} L_{t-1} + L_0, in bits/dim.

        Every term is evaluated at one draw x_t ~ q(x_t | x_0) per t (the KL
        terms are exact given x_t), with one network call per t. Returns
        total_bpd (B,), prior_bpd (B,), vb (B, T) and mse (B, T) of ε̂.
        """
        check_float(x0, "x0")
        check_batched(x0, "x0")
        check_in_unit_range(x0, "x0")
        B = x0.shape[0]
        vb = x0.new_zeros(B, self.T)
        mse = x0.new_zeros(B, self.T)
        for i in tqdm(range(self.T - 1, -1, -1), desc="bits/dim", disable=not progress, leave=False):
            t = torch.full((B,), i, dtype=torch.long, device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = self._q_sample(x0, t, noise)
            out, v = self.model_output(model, x_t, t)
            vb[:, i] = self._vb_terms(x0, x_t, t, out, v, clip_denoised, all_first=i == 0)["output"]
            eps = out if self.model_mean == "eps" else self._p_from_output(x_t, t, out, v, False)["eps"]
            mse[:, i] = mean_flat((eps - noise) ** 2)
        prior = self._prior_bpd(x0)
        return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb, "mse": mse}

    @torch.no_grad()
    def bpd_estimate(self, model: Model, x0: torch.Tensor, num_t: int = 4,
                     clip_denoised: bool = True, generator: torch.Generator | None = None
                     ) -> dict[str, torch.Tensor]:
        """An unbiased estimate of each example's whole bound in bits/dim, with 1 + num_t
        network calls instead of T.

        L_T is exact and L_0 is evaluated as in `calc_bpd_loop`. The T - 1 KL terms are
        estimated by stratified sampling: split t = 1..T-1 into num_t contiguous strata,
        draw one t uniformly in each, and weight its term by the stratum's size. Its
        expectation over t and x_t equals that of `calc_bpd_loop`'s total; the spread
        over examples of `total_bpd` gives the standard error of a mean over examples.
        Returns total_bpd, prior_bpd, decoder_bpd (L_0) and kl_bpd (the KL sum), each (B,).
        """
        check_float(x0, "x0")
        check_batched(x0, "x0")
        check_in_unit_range(x0, "x0")
        if isinstance(num_t, bool) or not isinstance(num_t, int) or not 1 <= num_t <= self.T - 1:
            raise ValueError(f"num_t must be an integer in 1..T-1 = 1..{self.T - 1}, got {num_t!r}")
        B, device = x0.shape[0], x0.device

        def term(t: torch.Tensor, first: bool) -> torch.Tensor:
            noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            x_t = self._q_sample(x0, t, noise)
            eps, v = self.model_output(model, x_t, t)
            return self._vb_terms(x0, x_t, t, eps, v, clip_denoised, all_first=first)["output"]

        decoder = term(torch.zeros(B, dtype=torch.long, device=device), first=True)
        edges = [1 + k * (self.T - 1) // num_t for k in range(num_t + 1)]  # strata a..b-1, none empty
        kl = x0.new_zeros(B)
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            u = torch.rand(B, generator=generator, device=device)
            t = (a + (u * (b - a)).long()).clamp(max=b - 1)  # uniform on a..b-1
            kl += (b - a) * term(t, first=False)
        prior = self._prior_bpd(x0)
        return {"total_bpd": prior + decoder + kl, "prior_bpd": prior, "decoder_bpd": decoder,
                "kl_bpd": kl}


def _derived_tables(s: Schedule) -> dict[str, torch.Tensor]:
    """The schedule's tables and the few the formulas above derive from them (float64, (T,))."""
    log_fixed_large = torch.log(torch.cat([s.posterior_variance[1:2], s.betas[1:]])) if s.T > 1 \
        else torch.log(s.betas)  # σ² = β_t, with β̃_1 at t = 0 so the decoder is not too wide
    return {
        **{f.name: getattr(s, f.name) for f in dataclasses.fields(s)},
        "one_minus_alphas_cumprod": 1.0 - s.alphas_cumprod,
        "log_one_minus_alphas_cumprod": torch.log1p(-s.alphas_cumprod),
        "eps_coef": s.betas / s.sqrt_one_minus_alphas_cumprod,
        "sqrt_alphas": s.alphas.sqrt(),
        "log_betas": torch.log(s.betas),
        "log_fixed_large": log_fixed_large,
    }


def snap_timesteps(diffusion: GaussianDiffusion, max_noise: float = 0.5) -> torch.Tensor:
    """(T,) bool: the timesteps at which `snap_to_levels` rounds x̂_0, those where the noise
    s_t = √((1 - ᾱ_t)/ᾱ_t) left in x_t/√ᾱ_t is below `max_noise` half-bins 1/(L-1).
    They are the first ones: s_t grows with t."""
    if not isinstance(max_noise, (int, float)) or not max_noise > 0:
        raise ValueError(f"max_noise must be a number > 0 (in half-bins), got {max_noise!r}")
    s = diffusion.schedule
    return s.sqrt_one_minus_alphas_cumprod / s.sqrt_alphas_cumprod < max_noise / (diffusion.num_levels - 1)


def snap_to_levels(model: Model, diffusion: GaussianDiffusion, max_noise: float = 0.5) -> Model:
    """`model` with its x̂_0 rounded to the data's levels at the timesteps where x_t pins them down.

    Data on L = `diffusion.num_levels` levels has bins of half-width h = 1/(L-1), and
    x_t/√ᾱ_t is x_0 plus noise of standard deviation s_t = √((1 - ᾱ_t)/ᾱ_t). Where
    s_t < max_noise · h (the default: the bin edge is at least two noise standard
    deviations away), x̂_0, clipped to [-1, 1], is rounded to the nearest level: the
    network no longer has to draw that staircase exactly, an error the small-t terms
    of the bound punish hard. Like `clip_denoised`, this only uses what is known of
    the data; the result is still a function of (x_t, t) alone, so `calc_bpd_loop`
    still computes an upper bound on the discrete NLL.

    Returns a model returning ε̂ (and v unchanged) like `model`. Build it with the
    diffusion the model was trained with: it receives the model's own timesteps, also
    under a respaced process. For evaluation and sampling: rounding has no gradient.
    """
    if diffusion.model_mean != "eps":
        raise ValueError(f"snap_to_levels needs a model that predicts ε (model_mean='eps'), "
                         f"got model_mean={diffusion.model_mean!r}")
    snap_t = snap_timesteps(diffusion, max_noise)  # (T,)
    levels = diffusion.num_levels - 1  # number of gaps between levels

    def snapped(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x_t, t)
        use = snap_t.to(t.device)[t]  # (B,)
        if not bool(use.any()):
            return out
        C = x_t.shape[1]
        eps = out[:, :C]
        x0 = diffusion.predict_x0_from_eps(x_t, t, eps).clamp(-1.0, 1.0)
        x0 = torch.round((x0 + 1.0) * levels / 2) * 2 / levels - 1.0
        eps = torch.where(use.view(-1, *([1] * (x_t.dim() - 1))),
                          diffusion.predict_eps_from_x0(x_t, t, x0), eps)
        return torch.cat([eps, out[:, C:]], dim=1)

    return snapped
