"""Progress of long batched loops (sampling, judging, evaluating): a bar with an ETA where a person watches.

The bar is drawn on a terminal only (tqdm's `disable=None`): logs and captured output stay free of carriage-return
noise. Training loops have their own bar (`progress` in a run's config).
"""

from __future__ import annotations

from collections.abc import Iterator


def batches(total: int, size: int, desc: str | None) -> Iterator[int]:
    """The start of each batch of `size` over `total` items, with a bar counting items when stderr is a terminal
    (none with `desc` None: a loop inside a step that has its own bar)."""
    if desc is None:
        yield from range(0, total, size)
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="item", disable=None, leave=False, dynamic_ncols=True) as bar:
        for start in range(0, total, size):
            yield start
            bar.update(min(size, total - start))
