"""Preference losses against values worked out by hand (arithmetic in the comments)."""

import math

import pytest
import torch

from sapo.train.losses import dpo_sigmoid_loss, log1mexp, orpo_loss


def t(*values: float, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# ---------------------------------------------------------------------------------------------------------------- DPO


def test_dpo_zero_margin_is_log_2():
    # policy and reference agree on both answers: margin h = 0, loss = -log sigmoid(0) = -log(1/2) = log 2
    losses, chosen_rewards, rejected_rewards = dpo_sigmoid_loss(
        t(-5.0, -1.0), t(-7.0, -3.0), t(-5.0, -1.0), t(-7.0, -3.0), 0.1
    )
    assert losses.shape == (2,)
    torch.testing.assert_close(losses, t(0.6931471805599453, 0.6931471805599453))
    torch.testing.assert_close(chosen_rewards, t(0.0, 0.0))
    torch.testing.assert_close(rejected_rewards, t(0.0, 0.0))


def test_dpo_margin_one_beta_point_one():
    # h = (-4 - -5) - (-7 - -7) = 1; loss = -log sigmoid(0.1 * 1) = log(1 + e^-0.1) = log(1.904837418) = 0.644396660
    # chosen reward = 0.1 * (-4 - -5) = 0.1, rejected reward = 0.1 * (-7 - -7) = 0
    losses, chosen_rewards, rejected_rewards = dpo_sigmoid_loss(t(-4.0), t(-7.0), t(-5.0), t(-7.0), beta=0.1)
    torch.testing.assert_close(losses, t(0.6443966600735709))
    torch.testing.assert_close(chosen_rewards, t(0.1))
    torch.testing.assert_close(rejected_rewards, t(0.0))


def test_dpo_label_smoothing():
    # cDPO, eps = 0.2, h = 1, beta = 0.1:
    # 0.8 * -log sigmoid(0.1) + 0.2 * -log sigmoid(-0.1) = 0.8 * 0.644396660 + 0.2 * 0.744396660 = 0.664396660
    # (-log sigmoid(-x) = -log sigmoid(x) + x, so this is 0.644396660 + 0.2 * 0.1)
    losses, _, _ = dpo_sigmoid_loss(t(-4.0), t(-7.0), t(-5.0), t(-7.0), beta=0.1, label_smoothing=0.2)
    torch.testing.assert_close(losses, t(0.6643966600735709))


def test_dpo_gradient_and_detached_rewards():
    # d/d(policy_chosen) of -log sigmoid(beta h) at h = 0 is -beta * sigmoid(0) = -0.1 * 0.5 = -0.05; +0.05 for rejected
    chosen, rejected = t(-5.0, requires_grad=True), t(-7.0, requires_grad=True)
    losses, chosen_rewards, rejected_rewards = dpo_sigmoid_loss(chosen, rejected, t(-5.0), t(-7.0), beta=0.1)
    losses.sum().backward()
    torch.testing.assert_close(chosen.grad, t(-0.05))
    torch.testing.assert_close(rejected.grad, t(0.05))
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


# ---------------------------------------------------------------------------------------------------------- log1mexp


def test_log1mexp_near_zero_is_finite_and_accurate():
    # log(1 - e^-1e-8) = log(1e-8 - 5e-17 + ...) = log(1e-8) - 5e-9 = -18.420680749; the naive log1p(-exp(x)) is -inf
    # in float32 because exp(-1e-8) rounds to 1.
    assert torch.log1p(-torch.exp(t(-1e-8))).item() == -math.inf
    value = log1mexp(t(-1e-8)).item()
    assert math.isfinite(value)
    assert value == pytest.approx(math.log(-math.expm1(-1e-8)), rel=1e-6)
    assert value == pytest.approx(-18.420680749, rel=1e-6)


def test_log1mexp_far_from_zero_keeps_the_small_term():
    # log(1 - e^-50) = -e^-50 - e^-100 / 2 - ... = -1.9287498e-22; log(1 - exp(x)) would round it to 0
    value = log1mexp(t(-50.0)).item()
    assert value == pytest.approx(-math.exp(-50.0), rel=1e-5)
    assert value == pytest.approx(-1.9287498479639178e-22, rel=1e-5)


@pytest.mark.parametrize("x", [-1e-6, -0.01, -0.5, -math.log(2) + 1e-6, -math.log(2) - 1e-6, -1.0, -5.0, -20.0])
def test_log1mexp_matches_math_on_both_branches(x):
    assert log1mexp(t(x, dtype=torch.float64)).item() == pytest.approx(math.log(-math.expm1(x)), rel=1e-12)


def test_log1mexp_upcasts_half_precision():
    assert log1mexp(t(-1.0, dtype=torch.bfloat16)).dtype == torch.float32
    assert log1mexp(t(-1.0, dtype=torch.float64)).dtype == torch.float64


def test_log1mexp_gradient_finite_on_both_branches():
    # d/dx log(1 - e^x) = -e^x / (1 - e^x): at -1e-8 about -1e8, at -50 about -e^-50; both finite, no nan leaking
    # out of the branch torch.where did not pick.
    x = t(-1e-8, -50.0, requires_grad=True)
    log1mexp(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == pytest.approx(-1e8, rel=1e-4)


# -------------------------------------------------------------------------------------------------------------- ORPO


def test_orpo_half_versus_quarter():
    # c = log 0.5: odds = 0.5 / 0.5 = 1. r = log 0.25: odds = 0.25 / 0.75 = 1/3. log_odds = log(1 / (1/3)) = log 3.
    # sigmoid(log 3) = 3 / (3 + 1) = 3/4, so L_OR = -log(3/4) = log(4/3) = 0.287682072
    # loss = nll + beta * L_OR = 2.0 + 0.1 * 0.287682072 = 2.028768207; rewards 0.1 * log 0.5, 0.1 * log 0.25
    losses, chosen_rewards, rejected_rewards, log_odds = orpo_loss(t(math.log(0.5)), t(math.log(0.25)), t(2.0), 0.1)
    torch.testing.assert_close(log_odds, t(1.0986122886681098))  # log 3
    torch.testing.assert_close(losses, t(2.0287682072451781))
    torch.testing.assert_close(chosen_rewards, t(-0.06931471805599453))
    torch.testing.assert_close(rejected_rewards, t(-0.13862943611198906))


def test_orpo_formula_written_out():
    # c = -0.1, r = -2.0, nll = 0.1, beta = 0.05, with the odds computed directly as P / (1 - P)
    pc, pr = math.exp(-0.1), math.exp(-2.0)  # 0.904837418, 0.135335283
    # log 9.508331945 - log 0.156517643 = 2.252168 + 1.854587 = 4.106755
    log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    expected = 0.1 - 0.05 * math.log(1 / (1 + math.exp(-log_odds)))  # 0.1 + 0.05 * 0.016327 = 0.100816
    losses, _, _, got_log_odds = orpo_loss(t(-0.1, -2.0), t(-2.0, -0.1), t(0.1, 0.1), beta=0.05)
    # second example swaps the answers: log_odds flips sign, L_OR = log(1 + e^4.106755) = 4.123082
    expected_swapped = 0.1 - 0.05 * math.log(1 / (1 + math.exp(log_odds)))
    torch.testing.assert_close(got_log_odds, t(log_odds, -log_odds))
    torch.testing.assert_close(losses, t(expected, expected_swapped))
    # 0.1 + 0.05 * 4.123082 = 0.306154
    assert expected == pytest.approx(0.100816, abs=1e-6) and expected_swapped == pytest.approx(0.306154, abs=1e-6)


def test_orpo_float32_output_and_gradient_finite_at_logp_near_zero():
    # mean log-probs at and just below 0 (P -> 1, odds -> inf): the loss and every gradient must stay finite,
    # including an exact 0.0 from bf16 logits.
    c = t(-1e-8, 0.0, -1e-8, -0.3, dtype=torch.bfloat16, requires_grad=True)
    r = t(-1.0, -1e-8, 0.0, -1e-8, dtype=torch.bfloat16, requires_grad=True)
    nll = t(0.5, 0.5, 0.5, 0.5, dtype=torch.bfloat16, requires_grad=True)
    losses, chosen_rewards, _, log_odds = orpo_loss(c, r, nll, beta=0.05)
    assert losses.dtype == torch.float32 and log_odds.dtype == torch.float32
    assert torch.isfinite(losses).all() and torch.isfinite(log_odds).all()
    losses.sum().backward()
    for grad in (c.grad, r.grad, nll.grad):
        assert torch.isfinite(grad.float()).all()
    assert not chosen_rewards.requires_grad
