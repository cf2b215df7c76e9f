"""Tests for diffusion_core.metrics: the Fréchet distance against closed forms, the digit
classifier's held-out accuracy, and the FID ranking real < blurred < noise."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_core.data import load_digits
from diffusion_core.metrics import (
    ClassifierConfig,
    accuracy,
    class_probs,
    confidence_stats,
    features,
    fid,
    frechet_distance,
    gaussian_frechet_distance,
    sample_yardsticks,
    train_classifier,
    train_digit_classifier,
)


def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


# -----------------------------------------------------------------------------
# Fréchet distance vs closed forms


def test_diagonal_covariances_match_closed_form(generator):
    # For diagonal covariances the distance is ||mu_a - mu_b||^2 + sum_i (sigma_a,i - sigma_b,i)^2;
    # a zero variance (singular covariance) must be handled too.
    gen = generator(0)
    mu_a, mu_b = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    sd_a = torch.rand(6, generator=gen, dtype=torch.float64) * 2
    sd_b = torch.rand(6, generator=gen, dtype=torch.float64) * 2
    sd_a[0] = 0.0
    expected = float((mu_a - mu_b).pow(2).sum() + (sd_a - sd_b).pow(2).sum())
    got = gaussian_frechet_distance(mu_a, torch.diag(sd_a**2), mu_b, torch.diag(sd_b**2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_commuting_full_covariances_match_closed_form(generator):
    # Covariances sharing eigenvectors Q: distance = ||dmu||^2 + sum_i (sqrt(l_a,i) - sqrt(l_b,i))^2.
    gen = generator(1)
    q = random_rotation(5, gen)
    lam_a = torch.rand(5, generator=gen, dtype=torch.float64) * 3 + 0.1
    lam_b = torch.rand(5, generator=gen, dtype=torch.float64) * 3 + 0.1
    mu_a, mu_b = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    cov_a, cov_b = q @ torch.diag(lam_a) @ q.T, q @ torch.diag(lam_b) @ q.T
    expected = float((mu_a - mu_b).pow(2).sum() + (lam_a.sqrt() - lam_b.sqrt()).pow(2).sum())
    assert gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-10)


def test_general_2x2_covariances_match_closed_form():
    # For 2x2 M = A B with positive eigenvalues, Tr(M^{1/2}) = sqrt(Tr M + 2 sqrt(det M)):
    # an independent formula for non-commuting full covariances.
    a = torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, -0.3], [-0.3, 1.5]], dtype=torch.float64)
    mu_a = torch.tensor([0.3, -1.0], dtype=torch.float64)
    mu_b = torch.tensor([1.0, 0.5], dtype=torch.float64)
    tr_sqrt = math.sqrt(float((a @ b).trace()) + 2 * math.sqrt(float(torch.det(a) * torch.det(b))))
    expected = float((mu_a - mu_b).pow(2).sum() + a.trace() + b.trace()) - 2 * tr_sqrt
    assert gaussian_frechet_distance(mu_a, a, mu_b, b) == pytest.approx(expected, rel=1e-10)
    assert gaussian_frechet_distance(mu_b, b, mu_a, a) == pytest.approx(expected, rel=1e-10)


def test_samples_approach_the_closed_form(generator):
    # Fitting Gaussians to many samples recovers the distance between the true Gaussians.
    gen = generator(2)
    q = random_rotation(3, gen)
    lam_a = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    lam_b = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64)
    mu_a = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    mu_b = torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    n = 200_000
    x_a = mu_a + (torch.randn(n, 3, generator=gen, dtype=torch.float64) * lam_a.sqrt()) @ q.T
    x_b = mu_b + (torch.randn(n, 3, generator=gen, dtype=torch.float64) * lam_b.sqrt()) @ q.T
    expected = float((mu_a - mu_b).pow(2).sum() + (lam_a.sqrt() - lam_b.sqrt()).pow(2).sum())
    # Its standard error by the delta method, from the true Gaussians: the gradient of the
    # distance is 2 Δμ in μ_a and I - T in Σ_a (T the transport map, here Q diag(√(λ_b/λ_a)) Qᵀ);
    # Var(μ̂) = Σ/n and Var(tr(M Σ̂)) = 2 tr((MΣ)²)/n for Gaussian data. About 0.012 here; the
    # bias of the estimate is O(1/n), about 1e-4.
    dmu = (mu_a - mu_b) @ q  # in the eigenbasis
    var = (4 * (dmu ** 2 * (lam_a + lam_b)).sum()
           + 2 * ((lam_a + lam_b) * (lam_a.sqrt() - lam_b.sqrt()) ** 2).sum()) / n
    z = (frechet_distance(x_a.float(), x_b.float()) - expected) / var.sqrt().item()
    assert abs(z) < 5


def test_identical_sets_are_at_distance_zero(generator):
    gen = generator(3)
    feats = torch.randn(500, 64, generator=gen)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    few = torch.randn(20, 64, generator=gen)  # N < D: a singular covariance
    assert frechet_distance(few, few.clone()) == pytest.approx(0.0, abs=1e-8)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="feats_a must have shape"):
        frechet_distance(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(ValueError, match="same feature size"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match=r"cov_b must have shape \(D, D\)"):
        gaussian_frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="probs must hold probabilities"):
        confidence_stats(torch.full((4, 10), 0.2))


# -----------------------------------------------------------------------------
# Confidence statistics on hand-made probabilities


def test_confidence_stats_on_known_probabilities():
    # 20 images: classes 0..9 twice each; the first ten with top probability 0.95, the rest 0.5.
    probs = torch.zeros(20, 10)
    for i in range(20):
        top = 0.95 if i < 10 else 0.5
        probs[i] = (1 - top) / 9
        probs[i, i % 10] = top
    stats = confidence_stats(probs)
    assert stats["frac_confident"] == pytest.approx(0.5)
    assert stats["class_shares"] == pytest.approx([0.1] * 10)
    assert stats["class_entropy"] == pytest.approx(math.log(10))

    one_class = F.one_hot(torch.full((7,), 3), 10).float()
    stats = confidence_stats(one_class)
    assert stats["frac_confident"] == 1.0
    assert stats["class_shares"][3] == 1.0 and sum(stats["class_shares"]) == 1.0
    assert stats["class_entropy"] == 0.0


# -----------------------------------------------------------------------------
# The classifier and the FID sanity ranking


# The classifier's training seed follows TEST_SEED: on another CPU its float32 training ends
# in other weights anyway, so every claim below must hold for any seed's classifier.
@pytest.fixture(scope="module")
def classifier(seed):
    return train_digit_classifier(seed=seed)


def test_classifier_generalises_to_held_out_digits(classifier, seed):
    x_test, y_test = load_digits("test")
    # The documented accuracy is about 0.98; 300 test digits give it a binomial standard
    # error of 0.008. (Measured over 8 training seeds: 0.973 to 0.987.)
    z = (accuracy(classifier, x_test, y_test) - 0.98) / math.sqrt(0.98 * 0.02 / len(y_test))
    assert z > -5
    assert train_digit_classifier(seed=seed) is classifier  # cached, not retrained
    assert not any(p.requires_grad for p in classifier.parameters())


def test_real_digits_look_confident_and_balanced(classifier):
    x_test, _ = load_digits("test")
    stats = confidence_stats(class_probs(classifier, x_test))
    assert stats["frac_confident"] > 0.8
    assert stats["class_entropy"] > 0.98 * math.log(10)  # the test split is 30 per class


def test_fid_ranks_real_then_blurred_then_noise(classifier, generator):
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    gen = generator(0)
    noise = torch.rand(x_test.shape, generator=gen) * 2 - 1
    blurred = F.avg_pool2d(F.pad(x_test, (1, 1, 1, 1), value=-1.0), 3, stride=1)  # 3x3 box blur
    fid_real = fid(x_train, x_test, classifier)
    fid_blur = fid(x_train, blurred, classifier)
    fid_noise = fid(x_train, noise, classifier)
    assert fid_noise > 10 * fid_real
    assert fid_real < fid_blur < fid_noise


def test_features_shape_and_any_image_size(generator):
    # The same code serves 28x28 images (MNIST): one quick epoch on random data.
    gen = generator(0)
    x = torch.rand(64, 1, 28, 28, generator=gen) * 2 - 1
    y = torch.randint(0, 10, (64,), generator=gen)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    model = train_classifier(x, y, ClassifierConfig(image_size=28), epochs=1)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    feats = features(model, x)
    assert feats.shape == (64, 64)
    assert torch.allclose(feats.norm(dim=1), torch.full((64,), 8.0))  # length sqrt(D)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        features(model, torch.zeros(2, 1, 8, 8))


def test_sample_yardsticks_tell_real_digits_from_noise(classifier, generator):
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    noise = torch.rand(x_test.shape, generator=generator(0)) * 2 - 1
    real, fake = (sample_yardsticks(x, x_train, classifier) for x in (x_test, noise))
    assert real["frechet"] < 0.1 * fake["frechet"]
    assert real["confident"] > 0.8
    # How many noise images a classifier calls confidently depends on its training seed
    # (0.12 to 0.42 over 8 seeds, 0.93 to 0.95 for real digits): real digits must be confident
    # significantly more often, by 5 standard errors of the difference of two shares.
    n = len(x_test)
    se = math.sqrt((real["confident"] * (1 - real["confident"]) + fake["confident"] * (1 - fake["confident"])) / n)
    assert (real["confident"] - fake["confident"]) / se > 5
    assert real["class_entropy"] > 0.98 * math.log(10)
    by_numpy = x_test.numpy().reshape(len(x_test), -1).std(axis=0, ddof=1).mean()
    assert math.isclose(real["pixel_std"], float(by_numpy), rel_tol=1e-5)


def test_paired_bootstrap_standard_errors():
    """The bootstrap SE of a mean against the textbook s / sqrt(N); pairing: the SE of a
    paired difference is std(a - b) / sqrt(N), far below that of independent sets."""
    from diffusion_core.metrics import paired_bootstrap
    gen = torch.Generator().manual_seed(0)
    n = 400
    a = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    b = a + 0.1 * torch.randn(n, 3, generator=gen, dtype=torch.float64)  # paired with a
    mean = lambda x: x[:, 0].mean()
    boot = paired_bootstrap(mean, a, n_boot=2000, generator=gen)
    textbook = a[:, 0].std() / math.sqrt(n)
    # the bootstrap SE itself is random: with 2000 replicates its relative SE is ~1/sqrt(4000),
    # and it uses the 1/N (not 1/(N-1)) variance: a 5% margin covers both
    assert abs(boot.std().item() / textbook.item() - 1) < 0.05
    gap = paired_bootstrap(lambda x, y: mean(x) - mean(y), a, b, n_boot=2000, generator=gen)
    paired_se = (a[:, 0] - b[:, 0]).std() / math.sqrt(n)
    assert abs(gap.std().item() / paired_se.item() - 1) < 0.05
    assert gap.std() < 0.2 * math.sqrt(2) * textbook  # unpaired would be sqrt(2) * textbook
    with pytest.raises(ValueError, match="xs\\[1\\] must have shape"):
        paired_bootstrap(lambda x, y: 0.0, a, b[:10])
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        paired_bootstrap(mean, a, n_boot=1)


def test_standard_errors_match_the_spread_of_repeated_measurements(generator):
    """Over M independent repeats, the variance of the means (shares) is what the squared
    standard error of one repeat predicts; the ratio's own SE comes from the chi-square law."""
    from diffusion_core.metrics import share_standard_error, standard_error
    gen = generator()
    M, N, sigma = 4000, 50, 3.0
    x = sigma * torch.randn(M, N, generator=gen, dtype=torch.float64)
    predicted = sum(standard_error(row) ** 2 for row in x) / M  # E[s^2 / N] = sigma^2 / N
    ratio = predicted / x.mean(1).var().item()
    assert abs(ratio - 1) < 5 * math.sqrt(2 / (M - 1) + 2 / (M * (N - 1)))
    assert math.isclose(standard_error(x[0]), x[0].numpy().std(ddof=1) / math.sqrt(N), rel_tol=1e-12)
    p, n = 0.3, 200
    shares = torch.bernoulli(torch.full((M, n), p, dtype=torch.float64), generator=gen).mean(1)
    ratio = share_standard_error(p, n) ** 2 / shares.var().item()
    assert abs(ratio - 1) < 5 * math.sqrt(2 / (M - 1))
    with pytest.raises(ValueError, match="x must have shape \\(N,\\) with N >= 2"):
        standard_error(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="share must lie in \\[0, 1\\]"):
        share_standard_error(1.5, 10)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        share_standard_error(0.5, 0)


def test_outlier_exposure_makes_non_digits_unconfident(classifier, seed, generator):
    """The same training with outlier exposure: held-out digits are still recognised, but
    uniform noise and pixel-shuffled digits no longer get confident answers."""
    x, y = load_digits("train")
    x_test, y_test = load_digits("test")
    oe = train_classifier(x, y, ClassifierConfig(), seed=seed, outlier_exposure=True)
    gen = generator(1)
    noise = torch.rand(x_test.shape, generator=gen) * 2 - 1
    shuffled = x_test.flatten(1)[:, torch.randperm(64, generator=gen)].view_as(x_test)
    for name, junk in (("noise", noise), ("shuffled", shuffled)):
        plain = confidence_stats(class_probs(classifier, junk))["frac_confident"]
        exposed = confidence_stats(class_probs(oe, junk))["frac_confident"]
        assert exposed < 0.05, (name, plain, exposed)  # 300 images: 15 may pass
    z = (accuracy(oe, x_test, y_test) - 0.95) / math.sqrt(0.95 * 0.05 / len(y_test))
    assert z > -5


def test_the_shipped_mnist_classifier_knows_digits_from_non_digits(generator):
    from diffusion_core.checkpoints import sha256_file
    from diffusion_core.data import load_mnist9k, mnist_dir
    from diffusion_core.pretrained import (
        CLASSIFIER_FILE,
        MNIST_CLASSIFIER,
        MNIST_CLASSIFIER_SHA256,
        PACKAGE_DIR,
        load_mnist_classifier,
    )

    assert sha256_file(PACKAGE_DIR / MNIST_CLASSIFIER / CLASSIFIER_FILE) == MNIST_CLASSIFIER_SHA256
    model = load_mnist_classifier()
    x, y = load_mnist9k(mnist_dir(download=False), "test")  # held out from its training
    z = (accuracy(model, x, y) - 0.97) / math.sqrt(0.97 * 0.03 / len(y))
    assert z > -5
    noise = torch.rand(x.shape, generator=generator(2)) * 2 - 1
    assert confidence_stats(class_probs(model, noise))["frac_confident"] < 0.02
