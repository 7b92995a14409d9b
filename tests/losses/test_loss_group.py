"""GRPO and RLOO advantages against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses import group_relative_advantages, rloo_advantages


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    adv = group_relative_advantages(rewards, 4, eps=0.0)
    # Group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5 / 0.57735 = +-0.866025.
    expected = 0.5 / math.sqrt(1 / 3)
    assert adv[:4].tolist() == pytest.approx([expected, -expected, -expected, expected], abs=1e-6)
    # Group 2: every reward equal -> no signal (0 / (0 + eps) with the default eps).
    assert group_relative_advantages(rewards, 4)[4:].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_dr_grpo_drops_the_std_scaling():
    adv = group_relative_advantages(torch.tensor([2.0, 0.0, 1.0, 1.0]), 2, scale=False)
    assert adv.tolist() == [1.0, -1.0, 0.0, 0.0]


def test_rloo_advantages_by_hand():
    adv = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    # 1 - (0 + 0 + 1) / 3 = 2/3 ; 0 - (1 + 0 + 1) / 3 = -2/3
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3], abs=1e-6)
    # Equal to G/(G-1) times the mean-centred reward.
    r = torch.tensor([0.3, 1.7, -0.4, 2.2, 5.0, 1.0])
    centred = r.view(-1, 3) - r.view(-1, 3).mean(-1, keepdim=True)
    torch.testing.assert_close(rloo_advantages(r, 3), (1.5 * centred).reshape(-1))


@pytest.mark.parametrize("fn", [group_relative_advantages, rloo_advantages])
def test_rewards_must_split_into_whole_groups(fn):
    with pytest.raises(ValueError, match="multiple of group_size"):
        fn(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size >= 2"):
        fn(torch.zeros(4), 1)
