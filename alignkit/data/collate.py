"""Pad and stack rendered sequences into tensors. Nothing here looks at tokens' meaning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from .render import Rendered

if TYPE_CHECKING:
    from torch import Tensor

Item = Rendered | tuple[Sequence[int], Sequence[int]]


def _ids_and_mask(item: Item) -> tuple[Sequence[int], Sequence[int]]:
    if isinstance(item, Rendered):
        return item.input_ids, item.loss_mask
    ids, mask = item
    if len(ids) != len(mask):
        raise ValueError(f"an item has {len(ids)} input ids but {len(mask)} loss mask entries")
    return ids, mask


def _padded_length(lengths: list[int], pad_to_multiple_of: int | None) -> int:
    longest = max(lengths)
    if not pad_to_multiple_of:
        return longest
    return -(-longest // pad_to_multiple_of) * pad_to_multiple_of


def pad_batch(
    items: Sequence[Item],
    pad_id: int,
    side: Literal["right", "left"] = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, Tensor]:
    """Stack items into ``input_ids`` (long), ``attention_mask`` (long) and ``loss_mask`` (bool).

    Padding positions get ``pad_id``, attention 0 and loss False. ``side="left"`` suits generation.
    """
    import torch

    if not items:
        raise ValueError("pad_batch needs at least one item")
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    pairs = [_ids_and_mask(item) for item in items]
    width = _padded_length([len(ids) for ids, _ in pairs], pad_to_multiple_of)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    loss_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(pairs):
        span = slice(0, len(ids)) if side == "right" else slice(width - len(ids), width)
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, span] = 1
        loss_mask[row, span] = torch.tensor(mask, dtype=torch.bool)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}
