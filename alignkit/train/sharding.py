"""Sharded training (FSDP2): each process holds 1/N of the trained model's parameters, gradients and optimizer state.

It is asked for the way accelerate users ask for it, by launching with an FSDP config
(`accelerate launch --config_file configs/accelerate/fsdp.yaml ...`, which sets ACCELERATE_USE_FSDP), and alignkit
applies torch's `fully_shard` itself, the same way on GPUs and on CPU processes over gloo: accelerate 1.15 applies
its FSDP plugin only to GPU-like process groups, so going through it would leave the CPU path (what the tests run)
a different one from the GPU path.

What is sharded: every block the model names as indivisible (`_no_split_modules`, the decoder layers of a Hugging
Face model) is its own unit, and the rest (embeddings, final norm, head, value head) is the root's unit. A forward
all-gathers a unit's parameters just before it runs and frees them after; the backward reduce-scatters the
gradients, averaged over the processes as DDP averages them, so the loops scale the loss the same way under both.

What is not: work that only some processes do, or that runs a different number of forward passes on each (the
evaluation on the main process, sampling until every answer ends), runs inside `whole(module)`: every process
gathers the full parameters once, works without further communication, and drops them after. Checkpoints and the
final model hold full tensors, as one process writes them, so a sharded run resumes unsharded and the other way
round. Frozen models that are not part of the trained module (a `ref_model`, a reward model judge) stay whole on
each process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from alignkit.train.errors import RunError
from alignkit.utils import processes

ENV = "ACCELERATE_USE_FSDP"


def requested() -> bool:
    """The launcher was given an FSDP config (accelerate sets ACCELERATE_USE_FSDP and FSDP_* for its processes) and
    started more than one process (one process has nothing to shard over)."""
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        raise RunError("alignkit does not run under DeepSpeed: its loops step, clip, checkpoint and save the model "
                       "themselves, which a DeepSpeed engine takes over. For ZeRO-3's sharding of parameters, "
                       "gradients and optimizer state, launch with configs/accelerate/fsdp.yaml (docs/scaling.md)")
    if not _flag(ENV) or processes.launched() < 2:
        return False
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise RunError(f"the accelerate config asks for FSDP version {version}; alignkit shards with FSDP2: set "
                       "`fsdp_version: 2` in its fsdp_config (see configs/accelerate/fsdp.yaml)")
    # Settings of accelerate's FSDP config that alignkit does not apply are refused rather than ignored.
    unsupported = {
        "FSDP_OFFLOAD_PARAMS": "fsdp_offload_params: CPU offload is not supported; set it to false",
        "FSDP_ACTIVATION_CHECKPOINTING": "fsdp_activation_checkpointing: set it to false and pass "
                                         "gradient_checkpointing=true to alignkit instead (the same recomputation)",
    }
    for name, why in unsupported.items():
        if _flag(name):
            raise RunError(f"the accelerate FSDP config sets {why}")
    kind = os.environ.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")
    if kind != "FULL_STATE_DICT":
        raise RunError(f"the accelerate FSDP config sets fsdp_state_dict_type: {kind}; alignkit's checkpoints and "
                       "final model hold whole tensors: set FULL_STATE_DICT")
    return True


def _flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).lower() in ("1", "true")


def _reshard_after_forward() -> bool:
    return _flag("FSDP_RESHARD_AFTER_FORWARD", "true")


def blocks(module: nn.Module) -> list[nn.Module]:
    """The units sharded on their own: instances of the classes the config names
    (`fsdp_transformer_layer_cls_to_wrap`), by default those the model names in `_no_split_modules`."""
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    names = {name.strip() for name in named.split(",") if name.strip()}
    if not names:
        for sub in module.modules():
            names.update(getattr(sub, "_no_split_modules", None) or ())
    return [sub for sub in module.modules() if type(sub).__name__ in names]


def shard(module: nn.Module) -> nn.Module:
    """Shard `module` in place over the launcher's processes: each block, then the module (the root). Call it before
    the optimizer is made: the parameters become new (distributed) tensors."""
    from torch.distributed.fsdp import fully_shard

    found = blocks(module)
    if not found:
        raise RunError(f"FSDP: {type(module).__name__} holds none of the layer classes to shard on their own (the "
                       "model's _no_split_modules, or the config's fsdp_transformer_layer_cls_to_wrap)")
    reshard = _reshard_after_forward()
    for block in found:
        fully_shard(block, reshard_after_forward=reshard)
    fully_shard(module, reshard_after_forward=reshard)
    # FSDP takes the first unit to run a forward for the root; sampling runs the policy inside the module, not the
    # module itself, so the root is settled here (FSDP2's own lazy initialisation, run early).
    module._get_fsdp_state()._lazy_init()
    return module


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def local_share(module: nn.Module) -> float:
    """The share of `module`'s parameter entries this process holds (1.0 unsharded, about 1/N sharded over N)."""
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return held / max(1, sum(p.numel() for p in params))


def _units(module: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [sub for sub in module.modules() if isinstance(sub, FSDPModule)]


@contextlib.contextmanager
def whole(module: nn.Module) -> Iterator[None]:
    """Inside, every unit of `module` holds its full parameters on every process (gathered once, on entering, by
    every process together), and its forward passes talk to no other process: sampling, and work done on the main
    process only, run as they do unsharded. A no-op for a module that is not sharded."""
    units = _units(module)
    if not units:
        yield
        return
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        reshard = _reshard_after_forward()
        for unit in units:
            unit.reshard()
            # The root keeps its parameters between forward and backward anyway (FSDP2's default for it).
            unit.set_reshard_after_forward(reshard and unit is not module, recurse=False)


@contextlib.contextmanager
def gradients_kept_local(model: nn.Module, accelerator) -> Iterator[None]:
    """The gradients of the passes inside are accumulated on this process, not yet reduced over the processes
    (every micro-batch of a step but its last): FSDP's switch, or DDP's `no_sync`."""
    units = _units(model)
    if not units:
        with accelerator.no_sync(model):
            yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full(tensor: torch.Tensor) -> torch.Tensor | None:
    """The whole tensor, on the CPU, on the main process (which writes it); None on the others, which take part in
    gathering a distributed one but do not keep it. Every process calls it, in the same order."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu() if processes.is_main() else None


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """`module.state_dict()` with whole tensors on the main process, None on the others (see `full`). A tensor that
    several names share (tied embeddings) is gathered once and stays shared, so that saving writes it once, as it
    does unsharded."""
    from torch.distributed.tensor import DTensor

    gathered: dict[tuple, torch.Tensor | None] = {}
    state = {}
    for name, value in module.state_dict().items():
        local = value.to_local() if isinstance(value, DTensor) else value
        key = (local.untyped_storage().data_ptr(), local.storage_offset(), tuple(value.shape))
        if key not in gathered:
            gathered[key] = full(value)
        state[name] = gathered[key]
    return state if processes.is_main() else None


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict | None:
    """The optimizer's state dict with whole tensors, the layout one unsharded process saves, on the main process;
    None on the others (see `full`)."""
    state = optimizer.state_dict()
    state["state"] = {key: {name: full(value) if torch.is_tensor(value) else value for name, value in entry.items()}
                      for key, entry in state["state"].items()}
    return state if processes.is_main() else None


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` (whole) laid out as `param` is: this process's shard of it for a distributed parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(value, DTensor) and value.shape == param.shape:
        # Every process holds the whole value (read from the same file): each takes its shard, no communication.
        return distribute_tensor(value.to(param.to_local().device, param.dtype), param.device_mesh, param.placements,
                                 src_data_rank=None)
    return value


def load_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy a whole `value` into `param`, sharded or not."""
    with torch.no_grad():
        param.copy_(_like(value, param))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state saved with whole tensors (`full_optimizer_state`, or an unsharded run's) into an optimizer over
    sharded parameters, or unsharded ones."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = optimizer.state.get(param, {})
            for name, value in entry.items():
                if torch.is_tensor(value):
                    entry[name] = _like(value, param)


def grad_norm(parameters: list[torch.Tensor], limit: float) -> float:
    """The gradient norm over all processes' shards, clipped to `limit`."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
