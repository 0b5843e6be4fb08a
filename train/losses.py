"""Preference losses as pure functions of per-example log-probabilities.

Nothing here sees a model, a batch dict or a trainer: the trainer computes log-probs and hands them in, so each
loss can be checked against numbers worked out by hand (tests/test_losses.py). Every function returns
per-example losses of shape (batch_size,); the caller reduces them.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["dpo_sigmoid_loss", "log1mexp", "orpo_loss"]

_LN2 = math.log(2.0)
# ORPO's odds need log(1 - p) with p = exp(mean logp). A mean log-prob of exactly 0.0 (p = 1, which bf16 logits
# can produce) makes that -inf and the gradient nan; capping it just below 0 keeps both finite and changes no value
# a real model produces (a 1e-20 shortfall from certainty).
_MAX_MEAN_LOGP = -1e-20


def dpo_sigmoid_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO sigmoid loss (Rafailov et al. 2023, Eq. 7), with the conservative-DPO label smoothing of Mitchell (2023).

    Args:
        policy_chosen_logps: summed log-probs of the chosen answers under the policy, shape (batch_size,).
        policy_rejected_logps: same for the rejected answers, shape (batch_size,).
        ref_chosen_logps: summed log-probs of the chosen answers under the reference model, shape (batch_size,).
        ref_rejected_logps: same for the rejected answers, shape (batch_size,).
        beta: DPO's beta, the strength of the implicit KL constraint (SAPO's recipes: 0.1).
        label_smoothing: epsilon, the assumed probability that a preference label is flipped; 0 is plain DPO.

    Returns:
        (losses, chosen_rewards, rejected_rewards), each of shape (batch_size,). The rewards are the implicit
        rewards beta * (log pi - log pi_ref) of DPO Eq. 5, detached: they are for logging only.
    """
    # h = (log pi(y+) - log pi_ref(y+)) - (log pi(y-) - log pi_ref(y-)), the log-ratio margin inside Eq. 7.
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    # cDPO: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h); eps = 0 gives Eq. 7 exactly.
    losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range (Maechler 2012, "Accurately Computing log(1 - exp(-|a|))").

    Near 0 the naive log1p(-exp(x)) rounds exp(x) to 1 and returns -inf, so x > -ln 2 uses log(-expm1(x)).
    Far below 0, 1 - exp(x) rounds to 1 and log() loses the small -exp(x), so x <= -ln 2 uses log1p(-exp(x)).
    Computed in float32 or wider whatever the input dtype. Shape is preserved.
    """
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    near_zero = x > -_LN2
    # Each branch only sees inputs it is accurate for; the other lanes get a harmless -1.0. Without this torch.where
    # would still back-propagate 0 * inf = nan through the branch it did not pick.
    near = torch.log(-torch.expm1(torch.where(near_zero, x, -1.0)))
    far = torch.log1p(-torch.exp(torch.where(near_zero, -1.0, x)))
    return torch.where(near_zero, near, far)


def orpo_loss(
    chosen_mean_logps: torch.Tensor,
    rejected_mean_logps: torch.Tensor,
    chosen_nll: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO loss (Hong et al. 2024, arXiv 2403.07691): L_SFT + lambda * L_OR per example (Eq. 6).

    With P(y|x) = exp(mean per-token log-prob of y) and odds(y|x) = P / (1 - P) (Eq. 4),
        log_odds = log odds(y+) - log odds(y-) = (c - r) - (log(1 - e^c) - log(1 - e^r)),
        L_OR = -log sigmoid(log_odds)                                                     (Eq. 7).

    Args:
        chosen_mean_logps: c, the length-AVERAGED log-prob of each chosen answer's tokens, shape (batch_size,).
        rejected_mean_logps: r, the same for the rejected answers, shape (batch_size,).
        chosen_nll: L_SFT, the per-token negative log-likelihood of the chosen answers (answer tokens only, as in
            the ORPO paper), shape (batch_size,). The trainers pass one token-mean over the whole batch, broadcast
            (as TRL's ORPOTrainer and the SAPO reference code compute it); a per-example mean works too.
        beta: lambda in the paper, the weight of the odds-ratio term (SAPO's ORPO recipe: 0.05).

    Returns:
        (losses, chosen_rewards, rejected_rewards, log_odds), each of shape (batch_size,), in float32. The rewards
        are beta * mean log-prob (as TRL logs them) and, like log_odds, detached: they are for logging only.
    """
    c = chosen_mean_logps.float().clamp(max=_MAX_MEAN_LOGP)
    r = rejected_mean_logps.float().clamp(max=_MAX_MEAN_LOGP)
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    losses = chosen_nll.float() - beta * F.logsigmoid(log_odds)
    chosen_rewards = beta * chosen_mean_logps.float().detach()
    rejected_rewards = beta * rejected_mean_logps.float().detach()
    return losses, chosen_rewards, rejected_rewards, log_odds.detach()
