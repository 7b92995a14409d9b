import math

import pytest
import torch

from alignkit.losses import entropy_from_logits, shift_labels, token_logprobs


def _reference(logits, labels):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("chunk_rows", [1024, 5, 1])
def test_token_logprobs_matches_log_softmax_and_gradients(chunk_rows):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(37, 1000, generator=g)).requires_grad_()
    labels = torch.randint(0, 1000, (37,), generator=g)
    upstream = torch.randn(37, generator=g)

    ours = token_logprobs(logits, labels, chunk_rows=chunk_rows)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), logits)
    ref = _reference(logits, labels)
    (grad_ref,) = torch.autograd.grad((ref * upstream).sum(), logits)

    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-6, rtol=1e-5)


def test_token_logprobs_hand_value_and_3d_shape():
    # Row [0, log 3]: softmax = [1/4, 3/4]; labels 1 and 0 give log 3/4 and log 1/4.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    out = token_logprobs(logits, torch.tensor([[1, 0]]), chunk_rows=1)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out, torch.tensor([[math.log(0.75), math.log(0.25)]]))


def test_token_logprobs_upcasts_half_precision():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 500, generator=g).to(torch.bfloat16)
    labels = torch.randint(0, 500, (2, 6), generator=g)
    out = token_logprobs(logits, labels, chunk_rows=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference(logits.float(), labels), atol=1e-5, rtol=1e-5)


def test_token_logprobs_gradcheck_double():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 7, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, labels, chunk_rows=2), (logits,))


def test_token_logprobs_ignore_index_gives_zero_and_no_gradient():
    logits = torch.zeros(2, 4, requires_grad=True)
    out = token_logprobs(logits, torch.tensor([1, -100]))
    torch.testing.assert_close(out, torch.tensor([math.log(0.25), 0.0]))
    out.sum().backward()
    # d log p(1) / dz = onehot(1) - softmax = [-1/4, 3/4, -1/4, -1/4]; the ignored row gets nothing.
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.25, 0.75, -0.25, -0.25], [0.0, 0.0, 0.0, 0.0]]))


def test_shift_labels_pairs_position_t_with_token_t_plus_1():
    input_ids = torch.tensor([[10, 11, 12, 13]])
    loss_mask = torch.tensor([[0, 0, 1, 1]])
    labels, mask = shift_labels(input_ids, loss_mask)
    assert labels.tolist() == [[11, 12, 13]]
    assert mask.tolist() == [[False, True, True]]


def test_entropy_uniform_and_with_banned_token():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, -float("inf")]])
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows=1), torch.tensor([math.log(4), math.log(3)]))
    # Bernoulli(1/4, 3/4): H = -(1/4 log 1/4 + 3/4 log 3/4) = 0.5623351446...
    h = entropy_from_logits(torch.tensor([[[0.0, math.log(3.0)]]]))
    assert h.shape == (1, 1)
    assert h.item() == pytest.approx(0.5623351446188083, abs=1e-6)
