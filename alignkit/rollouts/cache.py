"""A KV cache written in place: the decode loop's memory for the keys and values of everything seen so far.

transformers' `DynamicCache` appends a step's keys and values with `torch.cat`, which copies the whole cache at every
decode step: at batch 128 with prompts of several hundred tokens that is gigabytes per step, and the cost of a step
grows with everything generated before it. `InPlaceLayer` holds one buffer per layer, sized for the prompt plus the
tokens to be generated, writes each step's keys and values into it and hands attention a view of the filled part:
a step reads the cache once and copies nothing. If a sequence outgrows the buffer it is reallocated at twice the
size (a copy once, not at every step).

Only plain full-attention layers are replaced; any other kind a model's config asks for (sliding window, linear
attention, ...) keeps transformers' own layer, so every causal LM still decodes, the common ones without copying.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class InPlaceLayer(DynamicLayer):
    """One attention layer's keys and values [B, H, capacity, D]; `length` of them are filled."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True
        self.length = 0
        self._allocate(key_states, value_states, max(self.capacity, key_states.shape[-2]))

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        b, h, _, d = key_states.shape
        # Under autocast attention runs in its dtype whatever the states come in (keys leave the rotary embedding in
        # fp32): stored in it, they are cast once when written instead of the whole cache at every step.
        dtype = (torch.get_autocast_dtype(self.device.type) if torch.is_autocast_enabled(self.device.type)
                 else key_states.dtype)
        keys = key_states.new_empty((b, h, capacity, d), dtype=dtype)
        values = value_states.new_empty((b, value_states.shape[1], capacity, value_states.shape[-1]), dtype=dtype)
        if self.length:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values, self.capacity = keys, values, capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._allocate(key_states, value_states, max(end, 2 * self.capacity))
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (in that order, repeats allowed): one copy of the filled part, the spare room kept."""
        if not self.is_initialized:
            return
        keys = self._keys.new_empty((indices.shape[0], *self._keys.shape[1:]))
        values = self._values.new_empty((indices.shape[0], *self._values.shape[1:]))
        keys[:, :, : self.length] = self._keys[indices, :, : self.length]
        values[:, :, : self.length] = self._values[indices, :, : self.length]
        self._keys, self._values = keys, values
        self.keys, self.values = keys[:, :, : self.length], values[:, :, : self.length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            rows = torch.arange(self._keys.shape[0], device=self._keys.device).repeat_interleave(repeats)
            self.batch_select_indices(rows)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def reset(self) -> None:
        self.length = 0
        super().reset()


def in_place_cache(model, capacity: int) -> DynamicCache:
    """A cache for `model` whose full-attention layers write in place into buffers of `capacity` tokens (prompt +
    new tokens); other layer kinds are transformers' own."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    cache = DynamicCache(config=config)
    if cache.layers:
        cache.layers = [InPlaceLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    else:  # layers made as the model asks for them
        cache.layer_class_to_replicate = lambda: InPlaceLayer(capacity)
    return cache
