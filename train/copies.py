"""Frozen copies of the policy: SAPO's EMA generator and every DPO reference model.

Off ZeRO-3 a copy is a ``deepcopy``. Under DeepSpeed ZeRO-3 it cannot be: ``from_pretrained`` ran inside
``zero.Init``, so each rank holds only its shard of every parameter (``ds_tensor``), and a deepcopy's shards are
never gathered for a forward pass (the rehearsal hit "'weight' must be 2-D" in the first SAPO generation). The copy is
then built from the policy's config under ``zero.Init`` too, partitioned the same way, and each rank copies its own
shards into it: exactly the policy's weights (new token rows included), with no full gather. The reference code
loads each copy from disk (run_orpo.py:141-150), which cannot give a resized policy's new rows.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from sapo.train.ema import paired_parameters


def zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


@torch.no_grad()
def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode with gradients off, equal to it weight for weight."""
    if not zero3_enabled():
        return copy.deepcopy(model).eval().requires_grad_(False)
    import deepspeed
    from transformers import AutoModelForCausalLM

    twin = AutoModelForCausalLM.from_config(model.config, dtype=next(model.parameters()).dtype)  # under zero.Init
    twin.generation_config = copy.deepcopy(model.generation_config)
    for target, source in zip(*paired_parameters(twin, model), strict=True):
        if hasattr(source, "ds_tensor") and source.ds_tensor.shape == target.ds_tensor.shape:
            target.ds_tensor.copy_(source.ds_tensor)  # this rank's shard; both partitioned alike
        else:  # e.g. an embedding chat_format resized after loading, held whole: gather, copy, re-partition
            with deepspeed.zero.GatheredParameters([target, source], modifier_rank=0):
                if torch.distributed.get_rank() == 0:
                    target.data.copy_(source.data)
    return twin.eval().requires_grad_(False)


@contextmanager
def gathered(model: torch.nn.Module):
    """Under ZeRO-3, every parameter of ``model`` whole on every rank for the block (generation with a model no
    engine wraps: SPIN's opponent answering); otherwise nothing. Every rank must enter it, as it is collective."""
    if not zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        yield
