"""The shipped likelihood table: checked against independent estimates, not against itself."""

import math

import numpy as np
import pytest
import torch

from diffusion_core import snap_to_levels
from diffusion_core.baselines import GMMBaseline
from diffusion_core.data import DIGITS_LEVELS, load_digits
from diffusion_core.likelihoods import BASELINES, MODELS, VARIANTS, load_table, row_name
from diffusion_core.metrics import standard_error
from diffusion_core.pretrained import load_pretrained


@pytest.fixture(scope="module")
def table():
    return load_table()


@pytest.fixture(scope="module")
def heldout():
    return load_digits("test")[0]  # (300, 1, 8, 8)


def test_table_covers_every_row_on_all_held_out_digits(table, heldout):
    assert table["n"] == len(heldout) == 300
    expected = {row_name(m, v) for m in MODELS for v in VARIANTS} | set(BASELINES)
    assert set(table["rows"]) == expected
    for key, row in table["rows"].items():
        assert row["per_image"].shape == (300,), key
        assert math.isclose(row["mean"], row["per_image"].mean().item(), rel_tol=1e-6), key
        assert math.isclose(row["se"], standard_error(row["per_image"]), rel_tol=1e-4), key
    for m in MODELS:
        for v in VARIANTS:
            row = table["rows"][row_name(m, v)]
            # the KL terms t = 2..T are never negative: total >= L_0 + L_T, digit by digit
            kl = row["per_image"] - row["decoder"]["per_image"] - row["prior"]["per_image"]
            assert bool((kl >= -1e-5).all()), (m, v)


@pytest.mark.parametrize("model_name", MODELS)
def test_model_rows_agree_with_an_independent_estimate(table, heldout, model_name, generator):
    """The table's exact loop (all T terms) against `bpd_estimate` (8 random strata of t,
    other noise): both are unbiased for each digit's bound, so their paired difference over
    the 300 digits has mean 0 within its standard error. This also ties the table to the
    shipped weights: another model would differ by far more."""
    model, diffusion, _ = load_pretrained(model_name, progress=False)
    for variant, denoiser in (("plain", model), ("snapped", snap_to_levels(model, diffusion))):
        est = diffusion.bpd_estimate(denoiser, heldout, num_t=8, generator=generator(1))
        diff = table["rows"][row_name(model_name, variant)]["per_image"] - est["total_bpd"].double()
        assert abs(diff.mean().item()) < 5 * standard_error(diff), (variant, diff.mean().item())
        # L_0 is computed the same way in both, on other noise: close digit by digit on average
        dec = table["rows"][row_name(model_name, variant)]["decoder"]["per_image"]
        assert abs((dec - est["decoder_bpd"].double()).mean().item()) < \
            5 * standard_error(dec - est["decoder_bpd"].double()) + 1e-6


def test_categorical_row_is_the_count_model(table, heldout):
    """The categorical baseline's bits/dim, by counting levels per pixel with numpy."""
    train = load_digits("train")[0].numpy().reshape(-1, 64)
    test = heldout.numpy().reshape(-1, 64)
    to_level = lambda x: np.rint((x + 1) / 2 * (DIGITS_LEVELS - 1)).astype(int)  # noqa: E731
    tr, te = to_level(train), to_level(test)
    bits = np.zeros(len(te))
    for d in range(64):
        counts = np.bincount(tr[:, d], minlength=DIGITS_LEVELS)
        p = (counts + 1.0) / (len(tr) + DIGITS_LEVELS)  # add-one smoothing
        bits -= np.log2(p[te[:, d]])
    np.testing.assert_allclose(table["rows"]["per-pixel categorical"]["per_image"].numpy(),
                               bits / 64, rtol=1e-5)


def test_mixture_row_is_the_default_fit(table, heldout):
    gmm = GMMBaseline.fit(load_digits("train")[0])
    np.testing.assert_allclose(table["rows"]["Gaussian mixture"]["per_image"].numpy(),
                               gmm.bits_per_dim(heldout).double().numpy(), rtol=1e-4)


def test_snapping_changes_only_the_snapped_steps(table):
    """Same seeds, so plain and snapped see the same x_t: the terms after the n_snap first
    steps are the same numbers; and the per-t means add up to the totals."""
    for m in MODELS:
        plain, snapped = (table["rows"][row_name(m, v)] for v in VARIANTS)
        rest = [r["per_image"] - r["snap_steps"]["per_image"] for r in (plain, snapped)]
        assert torch.allclose(rest[0], rest[1], atol=1e-4), m
        assert plain["n_snap"] == snapped["n_snap"] > 0
        for row in (plain, snapped):
            assert row["per_t"].shape == (1000,)
            assert row["per_t"].sum().item() + row["prior"]["mean"] == pytest.approx(row["mean"], rel=1e-5)
            assert row["per_t"][:row["n_snap"]].sum().item() == pytest.approx(row["snap_steps"]["mean"], rel=1e-5)


def test_snapping_helps_every_model(table):
    """snap_to_levels lowers each model's bound, paired over the same digits and noise."""
    for m in MODELS:
        gain = (table["rows"][row_name(m, "plain")]["per_image"]
                - table["rows"][row_name(m, "snapped")]["per_image"])
        assert gain.mean().item() > 5 * standard_error(gain), m


def test_load_table_names_the_command_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m diffusion_core.likelihoods"):
        load_table(tmp_path / "none.json")


@pytest.mark.parametrize("model, variant", [("digits_x", "plain"), ("digits_simple", "rounded")])
def test_row_name_rejects_unknown(model, variant):
    with pytest.raises(ValueError, match="model must be|variant must be"):
        row_name(model, variant)


def test_per_image_is_float64(table):
    assert table["rows"]["digits_simple, plain"]["per_image"].dtype == torch.float64


def test_difference_to_table(table):
    from diffusion_core.likelihoods import difference_to_table

    row = table["rows"]["digits_vlb, plain"]["per_image"]
    idx = torch.arange(10, 40)
    mean, se = difference_to_table(row[idx] + 0.5, "digits_vlb, plain", idx, table)
    assert mean == pytest.approx(0.5) and se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="key must be one of"):
        difference_to_table(row[idx], "digits_ddim", idx, table)
    with pytest.raises(ValueError, match="values and indices"):
        difference_to_table(row[:5], "digits_vlb, plain", idx, table)
