"""Prefill that computes a prefix once for every prompt of a batch that starts with it.

Prompts repeat their openings: every chat prompt of a model starts with the same system turn (24 tokens of
SmolLM2's 71 on average in the held-out suite), and the suite's jailbreak prompts wrap 12 requests each in 7
templates whose first 24-105 tokens they share. On a CPU a prefill costs in proportion to the tokens it runs, so
running each shared part once saves most of it (measured in docs/benchmarks.md).

A batch is prefilled in up to three passes, each extending the same KV cache:
1. the prefix every prompt shares, for one row;
2. for each group of prompts that share more (the same next `GROUP_KEY` tokens), what the group shares, one row per
   group (left-padded to the longest);
3. each prompt's own remainder (left-padded), at least its last token, whose logits start decoding.
A row's sequence is then [shared prefix][padding][group part][padding][own part]: the attention mask marks the
padding, and positions count real tokens only, so every real token sees exactly the tokens before it, at the
positions it has in its own prompt. Padding in the middle changes which float sums attention adds up in which order,
so outputs can differ from a prefill of whole prompts in the last bits (and a greedy choice at a near-tie).
"""

from __future__ import annotations

import os

import torch

from alignkit.models.forward import position_ids
from alignkit.rollouts.cache import in_place_cache

GROUP_KEY = 16  # tokens after the shared prefix that put two prompts in one group
MIN_SAVED = 8  # share only when a part at least this long would otherwise run more than once


def _left_pad(parts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in parts)
    ids = torch.full((len(parts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(parts), width), dtype=torch.long, device=device)
    for i, part in enumerate(parts):
        if part:
            ids[i, width - len(part):] = torch.tensor(part, device=device)
            mask[i, width - len(part):] = 1
    return ids, mask


def plan(prompts: list[list[int]]) -> tuple[int, list[int], list[int]]:
    """(length of the prefix all share, the group of each prompt, the length of each group's shared part after it).
    Every prompt keeps at least its last token for its own pass."""
    shortest = min(len(p) for p in prompts)
    shared = min(len(os.path.commonprefix(prompts)), shortest - 1)
    keys: dict[tuple, int] = {}
    group_of, members = [], []
    for p in prompts:
        key = tuple(p[shared : shared + GROUP_KEY]) if len(p) - 1 - shared >= GROUP_KEY else ("alone", len(group_of))
        if key not in keys:
            keys[key] = len(members)
            members.append([])
        group_of.append(keys[key])
        members[keys[key]].append(p)
    lengths = []
    for group in members:
        if len(group) < 2:
            lengths.append(0)
            continue
        common = min(len(os.path.commonprefix([g[shared:] for g in group])), min(len(g) for g in group) - 1 - shared)
        lengths.append(common if common >= MIN_SAVED else 0)
    return shared, group_of, lengths


def prefill(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new_tokens: int, pad_id: int, *,
            share: bool = True):
    """Run the prompts [p, P] (left-padded) through `model` into a fresh in-place KV cache with room for `new_tokens`
    more, computing shared parts once (with `share`; else each prompt whole, in one pass). Returns (cache, attention
    mask of the prompt layout in the cache [p, W], logits at each prompt's last token [p, V])."""
    device = prompt_ids.device
    prompts = [row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask)]
    shared, group_of, group_len = plan(prompts) if share and len(prompts) > 1 else (0, None, [0])
    if shared < MIN_SAVED and not any(group_len):  # nothing worth sharing: each prompt whole, in one pass
        cache = in_place_cache(model, prompt_ids.shape[1] + new_tokens)
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                    cache=cache, use_cache=True, logits_to_keep=1)
        return out.cache, prompt_mask, out.logits[:, -1]
    groups = len(group_len)
    group_width = max(group_len)
    own = [p[shared + group_len[g]:] for p, g in zip(prompts, group_of)]
    own_width = max(len(o) for o in own)
    cache = in_place_cache(model, shared + group_width + own_width + new_tokens)
    # 1. the shared prefix, once
    if shared:
        ids = torch.tensor([prompts[0][:shared]], device=device)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=position_ids(torch.ones_like(ids)),
              cache=cache, use_cache=True, logits_to_keep=1)
    layout = torch.ones((groups, shared), dtype=prompt_mask.dtype, device=device)
    # 2. each group's shared part, once per group (a group without one has an empty, fully masked part)
    if group_width:
        first = [group_of.index(g) for g in range(groups)]
        parts = [prompts[first[g]][shared : shared + group_len[g]] for g in range(groups)]
        ids, mask = _left_pad(parts, pad_id, device)
        cache.batch_select_indices(torch.zeros(groups, dtype=torch.long, device=device))
        layout = torch.cat([layout, mask.to(layout.dtype)], dim=1)
        model(input_ids=ids, attention_mask=layout, position_ids=position_ids(layout)[:, shared:], cache=cache,
              use_cache=True, logits_to_keep=1)
        index = torch.tensor(group_of, device=device)
    else:
        index = torch.zeros(len(prompts), dtype=torch.long, device=device)
    cache.batch_select_indices(index)
    # 3. every prompt's own remainder
    ids, mask = _left_pad(own, pad_id, device)
    layout = torch.cat([layout[index], mask.to(layout.dtype)], dim=1)
    out = model(input_ids=ids, attention_mask=layout, position_ids=position_ids(layout)[:, -own_width:],
                cache=cache, use_cache=True, logits_to_keep=1)
    return out.cache, layout, out.logits[:, -1]
