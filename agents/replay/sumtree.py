"""A sum tree over non-negative priorities, resident on any device.

Sampling index i with probability p_i / sum(p) is a descent from the root: at each node, pick the
child whose cumulative sum first exceeds the remaining prefix sum. Leaves are float32 (the stored
priorities); internal sums are float64, recomputed from their children on every update rather than
patched by deltas, so rounding never accumulates.

Two kernels walk the same storage, because a torch call costs microseconds on a CPU whatever its size:
- torch (the GPU's): each level is a few batched torch calls with no host synchronisation, so that a
  CUDA graph can capture them; the tree is wide (fanout about the cube root of the capacity, 128 for a
  million leaves) so that 3 levels, not 20, pay those calls.
- numba (the CPU's): one compiled loop per operation over the same tensors' memory, paying per element
  instead, with 8 children per node. The batch moves a level at a time and asks for all its rows
  before reading any, so that their cache misses overlap; a round of 32 finds and 32 updates runs 30x
  faster than the torch kernel on the same CPU (scripts/bench/per.py, results/bench/per.json).
Both run on a CPU, where the tests hold them to each other.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

KERNELS = ("numba", "torch")


class SumTree:
    def __init__(self, capacity: int, device: str | torch.device = "cpu", fanout: int | None = None,
                 kernel: str | None = None):
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.device = torch.device(device)
        self.kernel = choose_kernel(self.device, kernel, "SumTree")
        if fanout is None:
            fanout = default_fanout(capacity, self.kernel)
        if fanout < 2:
            raise ValueError(f"SumTree fanout must be >= 2, got {fanout}")
        self.capacity = capacity
        self.fanout = fanout
        # levels[0] are the leaves; every level but the top has a length that is a multiple of fanout.
        sizes = [_round_up(capacity, fanout)]
        while sizes[-1] > fanout:
            parents = sizes[-1] // fanout
            sizes.append(parents if parents <= fanout else _round_up(parents, fanout))
        # The inner levels are views of one tensor: what a checkpoint saves, and what the CPU kernel walks.
        self.parents = torch.zeros(sum(sizes[1:]), dtype=torch.float64, device=self.device)
        self.levels = [torch.zeros(sizes[0], dtype=torch.float32, device=self.device), *self.parents.split(sizes[1:])]
        offsets = np.cumsum([0, *sizes[1:]])  # where each inner level starts in `parents`
        if self.kernel == "numba":  # the storage as the compiled loops take it (views: no copies)
            self._host = (self.levels[0].numpy(), self.parents.numpy(), offsets, fanout)
        # The last indices the CPU kernel's `stratified` returned, as a tensor and the array it views:
        # they usually come back (to gather the batch, to update priorities), and a tensor's .numpy()
        # costs a microsecond, a twentieth of a tree round.
        self._issued = (None, None)

    @property
    def leaves(self) -> torch.Tensor:
        return self.levels[0][: self.capacity]

    def total(self) -> torch.Tensor:
        """Sum of all priorities (a float64 scalar tensor on the tree's device)."""
        return self.levels[-1].sum(dtype=torch.float64)  # the leaves are the top in a tree of one level

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        return self.levels[0][indices]

    def update(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """Set leaves[indices] = priorities. Where an index repeats, its last priority wins."""
        if self.kernel == "numba":
            indices = self.host_indices(indices)
            if _dense_float32(priorities):
                # A learner's priorities are read where they lie: a tensor's numpy view costs 0.7
                # microseconds, a thirteenth of a tree round.
                loops, count, values = _update_loops_at, priorities.numel(), priorities.data_ptr()
            else:
                values = _host_array(priorities, np.float32)
                loops, count = _update_loops, values.size
            if indices.size != count:
                raise ValueError(f"{indices.size} indices for {count} priorities")
            loops(*self._host, self.capacity, indices, values)
            return
        indices = torch.as_tensor(indices, device=self.device).long().reshape(-1)
        priorities = torch.as_tensor(priorities, device=self.device, dtype=torch.float32).reshape(-1)
        if indices.numel() == 0:
            return
        indices, priorities = _last_per_index(indices, priorities)
        self.levels[0][indices] = priorities
        nodes = indices
        for child, parent in zip(self.levels[:-1], self.levels[1:]):
            # A parent listed twice is written twice with the same sum: no need to deduplicate.
            nodes = nodes // self.fanout
            parent.index_copy_(0, nodes, child.view(-1, self.fanout).index_select(0, nodes).sum(1, dtype=torch.float64))

    def find(self, prefix_sums: torch.Tensor) -> torch.Tensor:
        """For each prefix sum u in [0, total), the leaf i with cumsum[i-1] <= u < cumsum[i].

        Leaves of priority 0 are never returned; a u at or past the total (rounding) returns the last
        leaf of positive priority.
        """
        if self.kernel == "numba":
            prefix_sums = _host_array(prefix_sums, np.float64)
            node = np.empty(prefix_sums.size, np.int64)
            _find_loops(*self._host, prefix_sums.copy(), node)
            return torch.from_numpy(node)
        u = torch.as_tensor(prefix_sums, device=self.device, dtype=torch.float64).reshape(-1).clone()
        top = self.levels[-1]
        node = torch.zeros_like(u, dtype=torch.long)
        block = top.to(torch.float64).expand(u.numel(), -1)
        node, u = _descend(block, u, node, top.numel())
        for level in reversed(self.levels[:-1]):
            # index_select of whole rows: several times faster on a CPU than advanced indexing.
            block = level.view(-1, self.fanout).index_select(0, node).to(torch.float64)
            node, u = _descend(block, u, node, self.fanout)
        return node

    def stratified(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proportional sampling with one draw from each of B equal segments of the mass (Schaul et al.
        2016): for uniform u in [0, 1)^B, the leaves found at prefix sums (k + u_k) * total / B, and their
        probabilities p_i / total (float64)."""
        if self.kernel == "numba":
            u = _host_array(u, np.float64)
            # Outputs made here, not in the compiled loops: numba's boxing of arrays it allocated costs
            # more than numpy's empty.
            index, probability = np.empty(u.size, np.int64), np.empty(u.size)
            _stratified_loops(*self._host, u, index, probability)
            self._issued = (torch.from_numpy(index), index)
            return self._issued[0], torch.from_numpy(probability)
        u = torch.as_tensor(u, device=self.device, dtype=torch.float64).reshape(-1)
        total = self.total()
        strata = torch.arange(u.numel(), device=self.device, dtype=torch.float64)
        index = self.find((strata + u) * (total / u.numel()))
        return index, self.get(index).double() / total

    def host_indices(self, indices) -> np.ndarray:
        """Indices as a flat int64 numpy array (the CPU kernel's), a view where one exists."""
        if indices is self._issued[0]:  # the tensor views this array: same object, same data
            return self._issued[1]
        return _host_array(indices, np.int64)

    def state_dict(self) -> dict:
        """Copies on the CPU. The inner sums are saved, not recomputed at load: a level summed whole may
        add in another order than `update`'s sums of a few rows (reduction kernels are chosen by shape on
        a GPU), and an exact resume needs the same bits."""
        return {"leaves": self.levels[0].to("cpu", copy=True), "parents": self.parents.to("cpu", copy=True),
                "fanout": self.fanout}

    def load_state_dict(self, state: dict) -> None:
        # Leaves past the capacity are never written: a tree of another fanout pads them to another length.
        self.levels[0][: self.capacity].copy_(state["leaves"][: self.capacity].to(self.device))
        saved_fanout = state.get("fanout", default_fanout(self.capacity))  # older checkpoints: the torch default
        if "parents" in state and saved_fanout == self.fanout:
            self.parents.copy_(state["parents"].to(self.device))
            return
        # A checkpoint written before the sums were saved, or by a tree of another fanout (the other
        # kernel's default: a run moved between a GPU and a CPU): rebuilt from the leaves.
        for child, parent in zip(self.levels[:-1], self.levels[1:]):
            sums = child.view(-1, self.fanout).sum(1, dtype=torch.float64)
            parent.zero_()
            parent[: sums.numel()] = sums


def choose_kernel(device: torch.device, kernel: str | None = None, what: str = "SumTree") -> str:
    """The given kernel, checked, or the default: compiled loops on a CPU, torch calls elsewhere."""
    kernel = kernel or ("numba" if device.type == "cpu" else "torch")
    if kernel not in KERNELS or (kernel == "numba" and device.type != "cpu"):
        raise ValueError(f"{what} kernel {kernel!r} on {device}; allowed: 'torch', or 'numba' on a CPU")
    return kernel


def _descend(block: torch.Tensor, u: torch.Tensor, node: torch.Tensor, width: int):
    """One level down: in each row of children, the first whose cumulative sum exceeds u."""
    cums = block.cumsum(1)
    # Parents are summed in another order than this cumsum: keep u strictly inside the row's mass so
    # that the chosen child never has priority 0.
    u = torch.minimum(u, cums[:, -1] * (1 - 1e-12))
    child = torch.searchsorted(cums, u[:, None], right=True).squeeze(1).clamp_(max=width - 1)
    child = child[:, None]
    before = cums.gather(1, child) - block.gather(1, child)
    return node * width + child.squeeze(1), u - before.squeeze(1)


def _last_per_index(indices: torch.Tensor, values: torch.Tensor):
    """Each value replaced by the value of the last occurrence of its index, so that writing them all,
    in any order, leaves the last value at every index. Fixed shapes and no host synchronisation (unlike
    torch.unique), so that a CUDA graph can capture it."""
    n = indices.numel()
    order = torch.argsort(indices, stable=True)  # equal indices stay in their order of occurrence
    ranked = indices[order]
    starts = torch.ones(n, dtype=torch.bool, device=indices.device)
    starts[1:] = ranked[1:] != ranked[:-1]
    run = starts.long().cumsum(0) - 1
    position = torch.arange(n, device=indices.device)
    last = torch.zeros_like(position).scatter_reduce(0, run, position, reduce="amax", include_self=False)
    return indices, torch.empty_like(values).index_copy_(0, order, values[order[last[run]]])


def default_fanout(capacity: int, kernel: str = "torch") -> int:
    """The torch kernel: about the cube root of the capacity, a power of two, for three levels at any
    capacity (each level is a few torch calls, each costing microseconds on a CPU; measured on a 2-core
    CPU at 1M leaves, a batch of 32 descends fastest at 128). The compiled CPU kernel pays per element
    instead: 8 children per node did least work at 1M leaves (4 to 32 measured on an AMD EPYC, with the
    branchless pick; 16 did before it, of 8 to 128)."""
    if kernel == "numba":
        return 8
    return 1 << max(4, math.ceil(math.log2(round(capacity ** (1 / 3)) or 1)))


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


# ---------------------------------------------------------------- CPU kernels (compiled loops)
# They give the torch kernel's results: the same descent rule, with every sum in float64 added in
# index order (as a CPU cumsum does), so they may differ from the torch kernel only in the last bit of
# an inner sum.


def _host_array(x, dtype) -> np.ndarray:
    """A flat numpy array of a CPU tensor or array-like: a view where the dtype already matches (the
    common case returns after two attribute reads, since a tree round is only microseconds)."""
    if type(x) is np.ndarray and x.ndim == 1 and x.dtype == dtype:  # the usual case, in a tenth of the time
        return x
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return x if x.ndim == 1 and x.dtype == dtype else x.astype(dtype).reshape(-1)


def _dense_float32(x) -> bool:
    """A float32 tensor in one block of host memory, which the compiled loops can read in place."""
    return type(x) is torch.Tensor and x.dtype is torch.float32 and x.is_cpu and x.is_contiguous()


@intrinsic
def _float32_pointer(typingctx, address):
    """The float32 values at an integer address (a tensor's data_ptr), as numba.carray takes them."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.PointerType(ir.FloatType()))
    return types.CPointer(types.float32)(address), codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Starts loading the cache line of array[index] and returns at once (LLVM's prefetch: a read, kept
    in every cache level)."""
    def codegen(context, builder, signature, args):
        array_type, _ = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch." + byte_pointer.intrinsic_name)
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_rows(row, fanout, nodes):
    """The children of every node in `nodes`, asked for together: in a tree of a million leaves the lower
    rows are cache misses, and a batch whose misses overlap waits for memory about once per level
    rather than once per row."""
    for k in range(nodes.size):
        _prefetch(row, nodes[k] * fanout)
        if fanout * row.itemsize > 64:  # the row spans two cache lines (float64 sums, fanout above 8)
            _prefetch(row, nodes[k] * fanout + fanout - 1)


@numba.njit(cache=True, nogil=True)
def _update_loops(leaves, parents, offsets, fanout, capacity, indices, priorities):
    for k in range(indices.size):  # the leaves past the capacity pad the last row and must stay 0
        if not 0 <= indices[k] < capacity:
            raise IndexError("SumTree.update: an index is outside [0, capacity)")
    for k in range(indices.size):  # in order: where an index repeats, its last priority stays
        leaves[indices[k]] = priorities[k]
    # Level by level for the whole batch, each sum recomputed from its row of children.
    nodes = indices // fanout
    for level in range(1, offsets.size):  # inner level i lies at parents[offsets[i - 1]:offsets[i]]
        sums = parents[offsets[level - 1]:offsets[level]]
        if level == 1:
            _sum_rows(leaves, fanout, nodes, sums)
        else:
            _sum_rows(parents[offsets[level - 2]:offsets[level - 1]], fanout, nodes, sums)
        nodes //= fanout


@numba.njit(cache=True, nogil=True)
def _update_loops_at(leaves, parents, offsets, fanout, capacity, indices, address):
    """_update_loops with the priorities read from a dense float32 tensor's memory (`_dense_float32`)."""
    priorities = numba.carray(_float32_pointer(address), indices.size)
    _update_loops(leaves, parents, offsets, fanout, capacity, indices, priorities)


@numba.njit(cache=True, nogil=True, inline="always")
def _sum_rows(children, fanout, nodes, sums):
    """sums[node] = the sum of node's row of children, for each node in `nodes`."""
    _prefetch_rows(children, fanout, nodes)
    for k in range(nodes.size):
        sums[nodes[k]] = _row_sum(children, nodes[k] * fanout, fanout)


@numba.njit(cache=True, nogil=True)
def _find_loops(leaves, parents, offsets, fanout, u, node):
    """node[k] = the leaf where the prefix sum u[k] falls (u is overwritten). The batch descends together,
    a level at a time (see _prefetch_rows)."""
    top = offsets.size - 1
    node[:] = 0
    # A row's total is its parent's sum, added in the same order (or, after a checkpoint of the torch
    # kernel, within the margin that _pick keeps).
    total = np.full(u.size, _total(leaves, parents, offsets))
    for level in range(top, 0, -1):
        row = parents[offsets[level - 1]:offsets[level]]
        _descend_level(row, fanout, level == top, node, u, total)
    _descend_level(leaves, fanout, top == 0, node, u, total)


@numba.njit(cache=True, nogil=True, inline="always")
def _descend_level(row, fanout, is_top, node, u, total):
    """Each search one level down: node[k] becomes the child of node[k] where u[k] falls."""
    if not is_top:
        _prefetch_rows(row, fanout, node)
    for k in range(node.size):
        start, width = (0, row.size) if is_top else (node[k] * fanout, fanout)
        child, u[k] = _pick(row, start, width, u[k], total[k])
        node[k] = start + child
        total[k] = row[node[k]]


@numba.njit(cache=True, nogil=True)
def _stratified_loops(leaves, parents, offsets, fanout, u, index, probability):
    total = _total(leaves, parents, offsets)
    prefix_sums = probability  # until the leaves are found
    for k in range(u.size):
        prefix_sums[k] = (k + u[k]) * (total / u.size)
    _find_loops(leaves, parents, offsets, fanout, prefix_sums, index)
    for k in range(u.size):
        probability[k] = leaves[index[k]] / total


@numba.njit(cache=True, nogil=True, inline="always")
def _total(leaves, parents, offsets):
    """The sum of the top level (the leaves, in a tree of one level)."""
    top = offsets.size - 1
    return _row_sum(leaves, 0, leaves.size) if top == 0 else _row_sum(parents, offsets[top - 1], offsets[top] - offsets[top - 1])


@numba.njit(cache=True, nogil=True, inline="always")
def _row_sum(row, start, width):
    total = 0.0
    for j in range(start, start + width):
        total += row[j]
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _pick(row, start, width, u, total):
    """The first child whose cumulative sum exceeds u, and u less the children before it (_descend).

    Without an early exit: the cumulative sums of non-negative priorities never decrease, so that child
    is the count of sums at or below u. Where the search stops is random, and a loop that stopped there
    would mispredict its branch once per level of every search (about 1 microsecond of a tree round).
    """
    u = min(u, total * (1 - 1e-12))
    before = 0.0  # the sum of the children so far, added in index order
    chosen = 0.0  # the sum of the children before the one picked
    count = 0
    for j in range(width):
        after = before + row[start + j]
        below = after <= u
        count += below
        chosen = after if below else chosen
        before = after
    if count == width:  # u is past the row's own sum (rounding): its last child
        return width - 1, u - (before - row[start + width - 1])
    return count, u - chosen
