"""EMA arithmetic for SAPO's generator model and the copy that refreshes the DPO reference.

Pure tensor operations on lists of parameters: the callback that decides *when* to call them lives with the trainer.
SAPO (arXiv 2405.20830, Sec. 3) keeps an exponential moving average of the policy, generates the rejected segments
with it, and every `ref_update_steps` overwrites the DPO reference model with it.
"""

import torch
from torch import nn

__all__ = ["copy_weights_", "ema_update_", "paired_parameters"]


@torch.no_grad()
def ema_update_(ema_params: list[torch.Tensor], policy_params: list[torch.Tensor], decay: float) -> None:
    """In place: ema <- decay * ema + (1 - decay) * policy, for every pair at once.

    `decay` is the paper's EMA coefficient (`ema_decay`; reference recipes 0.5, reference code default 0.992).
    With a constant policy p, after n updates ema_n = decay^n * ema_0 + (1 - decay^n) * p: decay = 0 copies the
    policy, decay = 1 freezes the EMA. Both lists must pair up (see `paired_parameters`), on the same device and dtype.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {decay}")
    if len(ema_params) != len(policy_params):
        raise ValueError(f"got {len(ema_params)} EMA tensors but {len(policy_params)} policy tensors")
    # lerp(ema, p, w) = ema + w * (p - ema) = (1 - w) * ema + w * p, so w = 1 - decay. One fused call for all tensors.
    torch._foreach_lerp_(ema_params, policy_params, 1.0 - decay)


@torch.no_grad()
def copy_weights_(target_params: list[torch.Tensor], source_params: list[torch.Tensor]) -> None:
    """In place: target <- source for every pair (SAPO's reference refresh: reference <- EMA)."""
    if len(target_params) != len(source_params):
        raise ValueError(f"got {len(target_params)} target tensors but {len(source_params)} source tensors")
    torch._foreach_copy_(target_params, source_params)


def paired_parameters(
    target_model: nn.Module, source_model: nn.Module
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Pair the two models' parameters by name, in the target's order: (target_params, source_params).

    Pairing by name rather than by position (as the reference code's zip over `parameters()` does) turns an
    architecture mismatch into an error instead of a silent mix of unrelated weights. `named_parameters()` lists a
    tied tensor once (SmolLM2's embedding and lm_head), so a shared weight is updated once, not twice.

    Raises:
        ValueError: naming the first parameter missing from either model or whose shapes differ.
    """
    source = dict(source_model.named_parameters())
    target_params, source_params = [], []
    for name, param in target_model.named_parameters():
        if name not in source:
            raise ValueError(f"parameter {name!r} is in the target model but not in the source model")
        # under ZeRO-3 a parameter's shape is its shard's; ds_shape is the whole tensor's
        shape, source_shape = (tuple(getattr(p, "ds_shape", p.shape)) for p in (param, source[name]))
        if shape != source_shape:
            raise ValueError(f"parameter {name!r} has shape {shape} in the target but {source_shape} in the source")
        target_params.append(param)
        source_params.append(source.pop(name))
    if source:
        raise ValueError(f"parameter {next(iter(source))!r} is in the source model but not in the target model")
    return target_params, source_params
