"""pad_batch only pads and stacks: values, masks, dtypes, sides and rounding."""

import pytest
import torch

from alignkit.data import Rendered, pad_batch

PAD = 2
ITEMS = [
    Rendered(input_ids=[5, 6, 7], loss_mask=[0, 1, 1], prompt_len=1),
    Rendered(input_ids=[8], loss_mask=[1], prompt_len=0),
]


def test_right_padding():
    batch = pad_batch(ITEMS, PAD)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[False, True, True], [True, False, False]]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.bool


def test_left_padding():
    batch = pad_batch(ITEMS, PAD, side="left")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [PAD, PAD, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["loss_mask"].tolist() == [[False, True, True], [False, False, True]]


def test_tuples_and_pad_to_multiple_of():
    batch = pad_batch([([1, 2, 3, 4, 5], [0, 0, 1, 1, 1])], pad_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0, 0, 0]]
    assert batch["attention_mask"].sum().item() == 5 and batch["loss_mask"].sum().item() == 3


def test_bad_batches_are_refused():
    with pytest.raises(ValueError, match="at least one item"):
        pad_batch([], PAD)
    with pytest.raises(ValueError, match="3 input ids but 2 loss mask entries"):
        pad_batch([([1, 2, 3], [1, 1])], PAD)
    with pytest.raises(ValueError, match="side must be 'right' or 'left'"):
        pad_batch(ITEMS, PAD, side="middle")
