"""Tests for diffusion_core.baselines: the sample-quality check and the likelihood baselines."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import norm

from diffusion_core.baselines import CategoricalBaseline, GMMBaseline, evaluate_digit_samples
from diffusion_core.data import DIGITS_LEVELS, load_digits


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")[0], load_digits("test")[0]


@pytest.fixture(scope="module")
def gmm(digits, seed):
    return GMMBaseline.fit(digits[0], components=(4, 16), seed=seed)


# ---- sample quality --------------------------------------------------------------------------


def test_real_held_out_digits_pass_and_noise_fails(generator):
    x, y = load_digits("test")
    real = evaluate_digit_samples(x)
    assert real["passes"] and real["confident_fraction"] >= 0.8
    assert np.allclose(real["class_shares"], 0.1, atol=0.02)  # 30 of each class in the split
    noise = evaluate_digit_samples(torch.rand(300, 1, 8, 8, generator=generator(0)) * 2 - 1)
    assert not noise["passes"] and noise["confident_fraction"] < 0.1
    # all one class fails the balance rule even when every image is confident
    ones = evaluate_digit_samples(x[y == 1].repeat(4, 1, 1, 1))
    assert not ones["passes"] and max(ones["class_shares"]) > 0.9


def test_evaluate_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        evaluate_digit_samples(torch.zeros(4, 1, 28, 28))


# ---- categorical baseline --------------------------------------------------------------------


def test_categorical_probabilities_sum_to_one_per_pixel(digits):
    model = CategoricalBaseline.fit(digits[0], alpha=0.5)
    assert model.log_probs.shape == (64, DIGITS_LEVELS)
    assert torch.allclose(model.log_probs.exp().sum(dim=1), torch.ones(64, dtype=torch.float64),
                          atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 1e-9])
def test_categorical_train_nll_is_the_count_based_cross_entropy(digits, alpha):
    """On its own training set the bits/dim is -(1/D) Σ_d Σ_l (n_dl/N) log2 p_dl; as α -> 0
    that is the mean per-pixel empirical entropy. Computed here with plain counting."""
    x = digits[0]
    levels = np.rint((x.reshape(len(x), -1).numpy() + 1) / 2 * 16).astype(int)  # (N, 64)
    N, D = levels.shape
    expected = 0.0
    for d in range(D):
        for n in Counter(levels[:, d].tolist()).values():
            p = (n + alpha) / (N + DIGITS_LEVELS * alpha)
            expected -= n / N * math.log2(p)
    expected /= D
    got = CategoricalBaseline.fit(x, alpha=alpha).bits_per_dim(x).mean().item()
    assert got == pytest.approx(expected, rel=1e-9)


# ---- Gaussian mixture baseline ----------------------------------------------------------------


def test_gmm_pixel_marginals_sum_to_one(gmm):
    for d in (0, 20, 63):
        p = gmm.pixel_level_probs(d)
        assert p.shape == (DIGITS_LEVELS,) and (p >= 0).all()
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-10)


def test_gmm_likelihood_matches_a_direct_normal_cdf_computation(gmm, digits):
    """log p(x) = log Σ_k π_k Π_d [Φ((hi - μ)/σ) - Φ((lo - μ)/σ)], edge bins open."""
    x = digits[1][:5].reshape(5, -1).double().numpy()  # (5, 64)
    half = 1.0 / 16
    lo = np.where(x < -1 + half, -np.inf, x - half)
    hi = np.where(x > 1 - half, np.inf, x + half)
    w = gmm.log_weights.exp().numpy()
    mu, sigma = gmm.means.numpy(), gmm.log_scales.exp().numpy()  # (K, 64)
    per_pixel = norm.cdf((hi[:, None] - mu) / sigma) - norm.cdf((lo[:, None] - mu) / sigma)
    with np.errstate(divide="ignore"):  # a component far from x has probability 0 in float64
        expected = np.log((w * np.exp(np.log(per_pixel).sum(axis=2))).sum(axis=1))  # (5,)
    np.testing.assert_allclose(gmm.log_prob(digits[1][:5]).numpy(), expected, rtol=1e-6)


def test_gmm_chooses_components_by_bic_on_train(gmm):
    assert set(gmm.bic) == {4, 16}
    assert gmm.num_components == min(gmm.bic, key=gmm.bic.get)
    assert torch.allclose(gmm.log_weights.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_both_baselines_beat_a_uniform_guess_on_held_out_digits(digits, gmm):
    train, test = digits
    uniform = math.log2(DIGITS_LEVELS)  # 4.09 bits/dim
    cat = CategoricalBaseline.fit(train).bits_per_dim(test).mean().item()
    mix = gmm.bits_per_dim(test).mean().item()
    assert 0 < mix < cat < uniform
