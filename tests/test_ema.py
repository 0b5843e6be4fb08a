"""EMA update, weight copy and name-based parameter pairing, against hand-computed values."""

import pytest
import torch
from torch import nn

from sapo.train.ema import copy_weights_, ema_update_, paired_parameters


def test_one_step_half_decay():
    # 0.5 * 0 + (1 - 0.5) * 1 = 0.5
    ema, policy = [torch.zeros(3)], [torch.ones(3)]
    ema_update_(ema, policy, decay=0.5)
    torch.testing.assert_close(ema[0], torch.full((3,), 0.5))
    torch.testing.assert_close(policy[0], torch.ones(3))  # the policy is read, not written


def test_closed_form_after_five_steps_with_constant_policy():
    # d = 0.9, d^5 = 0.59049: ema_5 = 0.59049 * ema_0 + 0.40951 * p
    # [0.59049 * 2 + 0.40951 * 1, 0.59049 * -1 + 0.40951 * 3] = [1.59049, 0.63804]
    ema, policy = [torch.tensor([2.0, -1.0])], [torch.tensor([1.0, 3.0])]
    for _ in range(5):
        ema_update_(ema, policy, decay=0.9)
    torch.testing.assert_close(ema[0], torch.tensor([1.59049, 0.63804]))


def test_changing_policy_matches_hand_loop():
    # d = 0.5, ema_0 = 0, policy 1, 2, 3: 0.5 * 0 + 0.5 = 0.5; 0.25 + 1 = 1.25; 0.625 + 1.5 = 2.125
    ema, expected = [torch.zeros(1)], 0.0
    for p in (1.0, 2.0, 3.0):
        ema_update_(ema, [torch.tensor([p])], decay=0.5)
        expected = 0.5 * expected + 0.5 * p
    assert expected == 2.125
    torch.testing.assert_close(ema[0], torch.tensor([2.125]))


def test_updates_many_parameters_of_different_shapes_in_one_call():
    # d = 0.75: 0.75 * 4 + 0.25 * 0 = 3 for the matrix, 0.75 * 0 + 0.25 * 8 = 2 for the vector
    ema = [nn.Parameter(torch.full((2, 3), 4.0)), nn.Parameter(torch.zeros(5))]
    policy = [nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.full((5,), 8.0))]
    ema_update_(ema, policy, decay=0.75)
    torch.testing.assert_close(ema[0].data, torch.full((2, 3), 3.0))
    torch.testing.assert_close(ema[1].data, torch.full((5,), 2.0))


def test_decay_bounds():
    ema, policy = [torch.tensor([1.0])], [torch.tensor([5.0])]
    ema_update_(ema, policy, decay=1.0)  # frozen
    assert ema[0].item() == 1.0
    ema_update_(ema, policy, decay=0.0)  # copy
    assert ema[0].item() == 5.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="ema_decay"):
            ema_update_(ema, policy, decay=bad)
    with pytest.raises(ValueError, match="2 policy tensors"):
        ema_update_(ema, policy * 2, decay=0.5)


def test_copy_weights():
    target, source = [torch.zeros(2), torch.zeros(1)], [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    copy_weights_(target, source)
    torch.testing.assert_close(target, [torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    source[0].fill_(9.0)  # a copy, not an alias
    torch.testing.assert_close(target[0], torch.tensor([1.0, 2.0]))


class Tiny(nn.Module):
    """Embedding tied to the output head, like SmolLM2."""

    def __init__(self, swap_order: bool = False) -> None:
        super().__init__()
        if swap_order:  # same names, different registration order
            self.norm = nn.LayerNorm(4)
        self.embed = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.embed.weight
        if not swap_order:
            self.norm = nn.LayerNorm(4)


def test_paired_parameters_by_name_with_tied_weights():
    target, source = Tiny(), Tiny(swap_order=True)
    target_params, source_params = paired_parameters(target, source)
    # named_parameters() lists the tied tensor once: embed.weight, norm.weight, norm.bias (source: norm first)
    assert len(target_params) == len(source_params) == 3
    assert source_params[0] is source.embed.weight and source_params[1] is source.norm.weight
    # the shared weight is mixed once: 0.5 * 0 + 0.5 * 1 = 0.5 (mixing twice would give 0.75)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
        for p in source.parameters():
            p.fill_(1.0)
    ema_update_(target_params, source_params, decay=0.5)
    torch.testing.assert_close(target.head.weight.data, torch.full((6, 4), 0.5))


def test_paired_parameters_names_the_mismatch():
    with pytest.raises(ValueError, match=r"'0\.weight' has shape \(3, 2\) in the target but \(4, 2\)"):
        paired_parameters(nn.Sequential(nn.Linear(2, 3)), nn.Sequential(nn.Linear(2, 4)))
    with pytest.raises(ValueError, match=r"'1\.weight' is in the target model but not in the source"):
        paired_parameters(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match=r"'1\.weight' is in the source model but not in the target"):
        paired_parameters(nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
