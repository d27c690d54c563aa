"""Several processes, one model: torch.distributed and DistributedDataParallel, launched by torchrun.

`torchrun --nproc_per_node=N -m stylex train ...` starts N processes. Each joins the process group from
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), with gloo on the CPU and
nccl on CUDA, where rank r uses cuda:LOCAL_RANK. A step still sees the config's global batch:

- every rank holds the same seeded global permutation of the data and keeps its shard of each global batch
  (`batch_shard`), so the data order does not depend on the number of processes and a run can be resumed
  with another number of processes;
- every rank draws the noise maps and z for the whole global batch from the same seeded generator and keeps
  its shard, so the random inputs are those of a 1-process run;
- DDP averages the gradients, and the losses are means over equal shards, so N processes take the step that
  1 process takes on the global batch (up to the order of float sums).

Minibatch-std in D (`stylex.models.discriminator.minibatch_stddev`) pools features over groups of samples; a
group of the global batch must not be split between processes. Its groups are strided (samples i, i + M,
i + 2M, ... of a batch with M groups, as in StyleGAN2; kept so, so that 1-process runs train bit for bit as
before), so a rank's shard is a block of group *columns*:
viewing the global batch as [group, M], rank r takes the columns r * M / N ... (r + 1) * M / N. Within the
shard, minibatch-std then forms exactly the groups of the global batch, also for the [reconstructions;
z-path fakes] batch that D sees on z-path steps (checked, not assumed: see `_groups_kept`). Where the batch
cannot be split that way (M not a multiple of N, e.g. 4 processes sharing a batch of 8 in groups of 4), the
shard is contiguous, groups shrink to fit a rank's shard, and the run is no longer identical to 1 process;
rank 0 warns.

`torchrun ... -m stylex attfind` uses the same process group to split its images (`share`), add up the
effect rows (`sum`) and pass rank 0's verdicts on (`main_value`, `share_error`); see `stylex.attfind.run`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from stylex.errors import StylexError

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the process group; the default is a single process.

    Attributes:
        rank: global rank of this process (0 .. world_size - 1); rank 0 writes every file and shows progress.
        world_size: number of processes N (1 = not distributed: no process group, no DDP).
        local_rank: rank on this machine; on CUDA the process uses cuda:local_rank.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | torch.device) -> torch.device:
        """The device this process trains on: `requested`, or cuda:local_rank when distributed on CUDA."""
        device = torch.device(requested)
        if not self.enabled:
            return device
        if device.type == "cpu":
            return device
        if device.type != "cuda":
            raise StylexError(f"training with several processes runs on cpu or cuda, not {device.type}.")
        if device.index is not None and device.index != self.local_rank:
            raise StylexError(
                f"under torchrun pass --device cuda, not {device}; each process uses cuda:LOCAL_RANK itself."
            )
        if self.local_rank >= torch.cuda.device_count():
            raise StylexError(
                f"process {self.rank} wants cuda:{self.local_rank} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node."
            )
        return torch.device("cuda", self.local_rank)

    def check_batch(self, batch_size: int) -> None:
        """The global batch must split evenly between the processes."""
        if batch_size % self.world_size:
            raise StylexError(
                f"batch_size {batch_size} does not split evenly between {self.world_size} processes; make it a "
                f"multiple of {self.world_size} with --set batch_size=... (it stays the global batch)."
            )

    def batch_shard(self, batch_size: int, mbstd_group: int, z_path: bool) -> torch.Tensor | None:
        """Positions of this process's samples within each global batch (None when not distributed).

        Args:
            batch_size: the global batch B (a multiple of world_size).
            mbstd_group: D's minibatch-std group size (0 = off).
            z_path: whether D also sees [reconstructions; z-path fakes] batches of 2B.

        Returns:
            long [B / world_size]: strided group columns when they keep every minibatch-std group in one
            process (see the module docstring), else a contiguous block.
        """
        if not self.enabled:
            return None
        self.check_batch(batch_size)
        b = batch_size // self.world_size
        g = _group_size(mbstd_group, batch_size) if mbstd_group else 1
        m = batch_size // g  # number of groups
        if m % self.world_size == 0:
            cols = m // self.world_size
            shard = torch.arange(batch_size).view(g, m)[:, self.rank * cols : (self.rank + 1) * cols].reshape(-1)
            if not mbstd_group or _groups_kept(batch_size, mbstd_group, self.world_size, cols, z_path):
                return shard
        if self.is_main:
            warnings.warn(
                f"minibatch-std groups of {mbstd_group} cannot be kept whole when {self.world_size} processes "
                f"share a batch of {batch_size}; each process pools over its own {b} samples, so the run differs "
                "slightly from a 1-process run (use a batch_size that is a multiple of "
                f"{mbstd_group} x {self.world_size}).",
                stacklevel=2,
            )
        return torch.arange(self.rank * b, (self.rank + 1) * b)

    def wrap(self, module: nn.Module, without: tuple[str, ...] = ()) -> nn.Module:
        """`module` in DistributedDataParallel when distributed (gradients averaged in backward), else itself.

        Args:
            module: the network; every call through the wrapper must give all its parameters a gradient.
            without: names of child modules whose parameters the wrapper leaves alone (see `ModuleView`).
        """
        if not self.enabled:
            return module
        if without:
            module = ModuleView(module, without)
        device = module_device(module)
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def _reduced(self, values: torch.Tensor, op: str) -> torch.Tensor:
        """A copy of `values` all-reduced over the processes with `op` ("SUM", "MAX"; named, since a PyTorch build
        without torch.distributed has no ReduceOp), or `values` itself with one process."""
        if not self.enabled:
            return values
        values = values.clone()
        torch_dist.all_reduce(values, op=getattr(torch_dist.ReduceOp, op))
        return values

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over the processes (the same result on every rank)."""
        return self._reduced(values, "SUM") / self.world_size if self.enabled else values

    def max(self, values: torch.Tensor) -> torch.Tensor:
        """Largest value of a tensor over the processes (the same result on every rank)."""
        return self._reduced(values, "MAX")

    def from_main(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's tensor on every rank (on cuda with nccl)."""
        if not self.enabled:
            return values
        values = values.clone()
        torch_dist.broadcast(values, src=0)
        return values

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over the processes (the same result on every rank; on cuda with nccl)."""
        return self._reduced(values, "SUM")

    def share(self, items: torch.Tensor) -> torch.Tensor:
        """This process's share of `items` [n]: contiguous blocks in rank order, sizes differing by at most 1.

        Every item goes to exactly one process; a process gets none when n < world_size.
        """
        if not self.enabled:
            return items
        return torch.tensor_split(items, self.world_size)[self.rank]

    def main_value(self, value: T) -> T:
        """Rank 0's `value` (a small picklable object: a verdict, a flag) on every rank."""
        if not self.enabled:
            return value
        box: list[Any] = [value if self.is_main else None]  # rank 0's value on every rank after the broadcast
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_error(self, error: str | None) -> str | None:
        """Rank 0's error message (or None) on every rank: all processes stop together, or none does."""
        if not self.enabled:
            return error
        box = [error if self.is_main else None]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]


class ModuleView(nn.Module):
    """The forward of `module`, owning all of its parameters except those of the children named in `without`.

    DDP averages the gradients of the parameters of the module it wraps and expects every one of them to get
    a gradient in each backward pass. G's mapping network is used on the z path only, so the trainer wraps
    G without it, and the mapping network on its own, rather than search the autograd graph for unused
    parameters every step (`find_unused_parameters`).

    Args:
        module: the network; not registered as a child (its excluded parameters are not the view's).
        without: names of direct children of `module` to leave out.
    """

    inner: nn.Module

    def __init__(self, module: nn.Module, without: tuple[str, ...]):
        super().__init__()
        self.__dict__["inner"] = module  # plain attribute: not a submodule, its parameters are not all ours
        names = dict(module.named_children())
        missing = sorted(set(without) - set(names))
        assert not missing, f"{type(module).__name__} has no children {missing}"
        for name, child in names.items():
            if name not in without:
                self.add_module(name, child)
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _group_size(group: int, n: int) -> int:
    """The group size `minibatch_stddev` uses for a batch of n: the largest divisor of n that is <= group."""
    g = min(group, n)
    while n % g:
        g -= 1
    return g


def _group_ids(n: int, group: int) -> torch.Tensor:
    """Minibatch-std group of each position of a batch of n: strided, position i is in group i mod (n / g)."""
    return torch.arange(n) % (n // _group_size(group, n))


def _groups_kept(batch_size: int, group: int, world_size: int, cols: int, z_path: bool) -> bool:
    """Whether column shards form, in every process, exactly the minibatch-std groups of the global batch."""
    g = _group_size(group, batch_size)
    m = batch_size // g
    for r in range(world_size):
        shard = torch.arange(batch_size).view(g, m)[:, r * cols : (r + 1) * cols].reshape(-1)
        layouts = [(shard, batch_size)]
        if z_path:  # on z-path steps D sees [reconstructions; fakes], a batch of 2B
            layouts.append((torch.cat([shard, shard + batch_size]), 2 * batch_size))
        for positions, n in layouts:
            full = _group_ids(n, group)  # [n] group of each position of the global batch
            local = _group_ids(len(positions), group)  # [n / N] group of each position within the shard
            seen = set()
            for j in local.unique().tolist():
                target = full[positions[local == j]].unique()
                # a local group must be one whole global group, and no two local groups the same one
                if len(target) != 1:
                    return False
                k = int(target)
                if int((full == k).sum()) != int((local == j).sum()) or k in seen:
                    return False
                seen.add(k)
    return True


def current() -> Distributed:
    """The process group this process has joined, or the single-process default."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return Distributed()
    return Distributed(
        torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", torch_dist.get_rank()))
    )


def one_process(what: str) -> None:
    """Refuse to run `what` under torchrun (WORLD_SIZE > 1): work that is not shared between the processes would be
    done whole by each of them (and `demo` died on rank 1, which AttFind leaves without a result)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world_size = 1
    if torch_dist.is_available() and torch_dist.is_initialized():
        world_size = torch_dist.get_world_size()
    if world_size > 1:
        raise StylexError(
            f"{what} runs in one process, and WORLD_SIZE is {world_size} (torchrun, or another launcher, started "
            f"{world_size} processes); only `stylex train` and "
            "`stylex attfind` (train_stylex and run_attfind in Python) share their work between processes. Run it "
            "without torchrun."
        )


@contextlib.contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[Distributed]:
    """Join torchrun's process group for the duration of the block (gloo on cpu, nccl on cuda).

    Launched without torchrun (or with one process), yields the single-process default and does nothing. If a
    process group is already initialised (by the caller), uses it and leaves it open.

    Args:
        device: the device asked for ("cpu" or "cuda"); decides the backend.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        yield current()
        return
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Distributed()
        return
    if not torch_dist.is_available():
        raise StylexError("this PyTorch build has no torch.distributed; run one process (without torchrun).")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dist = Distributed(rank, world_size, local_rank)
    target = dist.device(device)  # validates before any collective
    if target.type == "cuda":
        torch.cuda.set_device(target)
        torch_dist.init_process_group("nccl", device_id=target)
    else:
        torch_dist.init_process_group("gloo")
    try:
        yield dist
        # every rank leaves together: a rank that tore gloo down while another still worked (rank 0 drawing the
        # pictures) was aborted at exit now and then ("terminate called without an active exception", SIGABRT)
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()
