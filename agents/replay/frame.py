"""FrameReplay: an experience replay that stores each observed frame once.

Storage is time-major, `[T, N, *obs_shape]` for N parallel environments and T = capacity // N slots
per environment; each environment's column is its own circular sequence of frames. A slot holds the
newest frame of one observation together with the action taken from it, the learning reward and the
episode flags of that step. When an episode ends, its final observation's newest frame takes one extra
slot (flag FINAL), so the next observation of every transition is simply the stack ending one slot
later (a capacity of C slots holds C transitions less one per episode end still in it). Stacks are rebuilt at sample time by index arithmetic; frames from before an episode's first
observation are zeros, as the environments' own frame stacks pad them (gymnasium's
FrameStackObservation with padding "zero").

Which slots can be sampled is a pure function of the flags and the write counters (`_sampleable`): a
transition needs the frames of its stack that lie inside its episode, and its n-step future up to the
n-th step or the episode's end, all written and not yet overwritten. Each `add` re-evaluates that
function on the few slots it can have changed and writes the result into a sum tree (1 for a valid
slot, 0 otherwise), so uniform sampling is a vectorised descent with no rejection; prioritized
replay stores priorities in the same tree.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numba
import numpy as np
import torch

from agents.replay.storage import CODECS, frame_store
from agents.replay.sumtree import SumTree, choose_kernel

TERMINATED, TRUNCATED, FIRST, FINAL = 1, 2, 4, 8
DONE = TERMINATED | TRUNCATED


@dataclasses.dataclass
class Batch:
    obs: torch.Tensor  # [B, stack, *obs_shape], obs_dtype
    action: torch.Tensor  # [B] int64
    reward: torch.Tensor  # [B] float32: sum_{i<k} gamma^i r_{t+i}, k = n or the steps to the episode's end
    discount: torch.Tensor  # [B] float32: gamma^k, or 0 when the episode terminated within k steps
    next_obs: torch.Tensor  # [B, stack, *obs_shape]: the observation k steps later (bootstrap state)
    index: torch.Tensor  # [B] int64: slot ids, for update_priorities
    weight: torch.Tensor | None = None  # [B] float32 importance weights (prioritized replay)

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`; from host memory to a GPU through pinned memory, without blocking."""
        if self.obs.device == torch.device(device):
            return self
        pin = self.obs.device.type == "cpu" and torch.device(device).type == "cuda"

        def move(t):
            if t is None:
                return None
            return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

        return Batch(*(move(getattr(self, f.name)) for f in dataclasses.fields(self)))


class ReplayTooLargeError(MemoryError):
    pass


class FrameReplay:
    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...] = (84, 84),
        stack: int = 4,
        n_step: int = 1,
        gamma: float = 0.99,
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.uint8,
        seed: int | None = None,
        compress: str = "none",
        kernel: str | None = None,
    ):
        _check(num_envs >= 1, f"num_envs must be >= 1, got {num_envs}")
        _check(stack >= 1, f"stack must be >= 1, got {stack}")
        _check(n_step >= 1, f"n_step must be >= 1, got {n_step}")
        _check(0.0 <= gamma <= 1.0, f"gamma must be in [0, 1], got {gamma}")
        slots = capacity // num_envs if capacity >= 1 else 0
        # Each column must hold a whole stack, an n-step window and an episode's final frame.
        _check(
            slots >= stack + n_step + 1,
            f"capacity {capacity} gives {slots} slots per env for {num_envs} envs; need at least "
            f"stack + n_step + 1 = {stack + n_step + 1} (capacity >= {(stack + n_step + 1) * num_envs})",
        )
        self.capacity, self.num_envs, self.slots = slots * num_envs, num_envs, slots
        self.obs_shape, self.stack, self.n_step, self.gamma = tuple(obs_shape), stack, n_step, gamma
        self.device, self.obs_dtype, self.compress = torch.device(device), obs_dtype, compress
        _check(compress in CODECS, f"replay compression {compress!r}; allowed: {', '.join(CODECS)}")
        # As the sum tree's: a compiled loop on a CPU, batched torch calls (capturable) on a GPU.
        self.kernel = choose_kernel(self.device, kernel, "replay")
        check_fits(self.bytes_needed(), self.device, what=f"replay of capacity {self.capacity:,}")

        shape = (slots, num_envs)
        # One row per slot (row = slot * num_envs + env), and row `capacity`, all zeros, for the frames
        # before an episode's start.
        self.store = frame_store(self.capacity, math.prod(self.obs_shape), obs_dtype, self.device, compress)
        self.action = torch.zeros(shape, dtype=torch.int32, device=self.device)
        self.reward = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.flags = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        # A host copy of the flags: validity is decided from them with numpy, whose small operations
        # cost a microsecond where torch's cost several.
        self.host_flags = np.zeros(shape, dtype=np.uint8)
        self.tree = SumTree(self.capacity, self.device, kernel=self.kernel)
        # Written slots per env (monotonic), and whether the env's next add starts an episode.
        self.count = np.zeros(num_envs, dtype=np.int64)
        self.episode_start = np.ones(num_envs, dtype=bool)
        # Newest slot of each env when the tree was last brought up to date (it is, lazily, before
        # anything reads it).
        self.refreshed_head = self._head()
        self.steps_added = 0  # transitions added, all envs together
        # Set once a transition can be sampled. It stays true (every column keeps stack + n_step + 1
        # slots, so its newest complete transition stays sampleable), which spares reading the tree's
        # total back from a GPU, a stall, at every sample.
        self.sampleable = False
        self.discounts = gamma ** torch.arange(n_step + 1, dtype=torch.float32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
        if self.kernel == "numba":  # what the compiled gather reads: views of the tensors, never copies
            self._host = (self.action.numpy(), self.reward.numpy(), self.flags.numpy(), self.discounts.numpy())
        if self.device.type == "cpu":  # flat views, which `add` and `_refresh` write through (see _put)
            self._flat = {name: getattr(self, name).numpy().reshape(-1) for name in ("action", "reward", "flags")}
            self._flat["leaves"] = self.tree.levels[0].numpy()

    # ---------------------------------------------------------------- sizes
    def bytes_needed(self) -> int:
        frame = math.prod(self.obs_shape) * _itemsize(self.obs_dtype) if self.compress == "none" else 0  # grows
        per_slot = frame + 4 + 4 + 1 + 1 + 4
        return self.capacity * per_slot + (self.capacity // 8) * 8  # tree's upper levels, generously

    def nbytes(self) -> int:
        """Bytes held: frames, the allocated tensors and the host flags."""
        tensors = [self.action, self.reward, self.flags, *self.tree.levels]
        return self.store.nbytes() + sum(t.numel() * t.element_size() for t in tensors) + self.host_flags.nbytes

    def __len__(self) -> int:
        """Number of transitions that can be sampled now."""
        self._refresh()
        return int((self.tree.leaves > 0).sum())

    # ---------------------------------------------------------------- adding
    def add(self, obs, action, reward, terminated, truncated, next_obs) -> None:
        """Adds one step of every environment.

        obs, next_obs: [N, stack, *obs_shape] as the environments gave them; on a step that ended an
        episode, next_obs is that episode's final observation. reward is the learning reward.
        terminated ends the return (no bootstrap); truncated (time limit) bootstraps from next_obs.

        Only the newest frame of next_obs is written (and of obs, at an episode's first step): within an
        episode, obs is the previous step's next_obs.
        """
        terminated = np.asarray(terminated, dtype=bool).reshape(self.num_envs)
        truncated = np.asarray(truncated, dtype=bool).reshape(self.num_envs)
        done = terminated | truncated
        start = self.episode_start
        c, N = self.count, self.num_envs
        if start.any():
            first = np.flatnonzero(start)
            obs = self._frames_of(obs, "obs")[torch.as_tensor(first, device=self.device)]
            if self.stack > 1 and obs[:, :-1].any():
                raise ValueError(
                    "the first observation of an episode has non-zero frames before its newest one; "
                    "FrameReplay rebuilds stacks with zeros there, so the environments must pad the same "
                    "way (gymnasium FrameStackObservation(padding_type='zero'))"
                )
            rows = torch.as_tensor((c[first] % self.slots) * N + first, device=self.device)
            self.store.write(rows, obs[:, -1].reshape(len(first), -1))
        rows = (c % self.slots) * N + np.arange(N)
        self._put("action", rows, np.asarray(action).reshape(-1).astype(np.int32))
        self._put("reward", rows, np.asarray(reward, dtype=np.float32).reshape(-1))
        self._set_flags(c, (terminated * TERMINATED | truncated * TRUNCATED | start * FIRST).astype(np.uint8))
        # The next frame: an episode's final frame (a slot of its own), or the next step's observation.
        rows = torch.as_tensor(((c + 1) % self.slots) * N + np.arange(N), device=self.device)
        self.store.write(rows, self._frames_of(next_obs, "next_obs")[:, -1].reshape(N, -1))
        self._set_flags(c + 1, (done * FINAL).astype(np.uint8))
        self.count = c + 1 + done
        self.episode_start = done
        self.steps_added += self.num_envs

    def cut_episodes(self) -> None:
        """Ends every episode in progress as truncated (it bootstraps from the frame already stored
        after its last step): the environments restart (a resume on a backend without snapshots)."""
        running = ~self.episode_start
        if not running.any():
            return
        c = self.count
        last = self.host_flags[(c - 1) % self.slots, np.arange(self.num_envs)]
        self._set_flags(c - 1, np.where(running, last | TRUNCATED, last).astype(np.uint8))
        following = self.host_flags[c % self.slots, np.arange(self.num_envs)]
        self._set_flags(c, np.where(running, FINAL, following).astype(np.uint8))
        self.count = c + running
        self.episode_start = np.ones(self.num_envs, dtype=bool)
        # The newest slot is unchanged, but the windows before it now end: re-evaluate them.
        self.refreshed_head = np.minimum(self.refreshed_head, self._head() - running)

    def _set_flags(self, logical: np.ndarray, flags: np.ndarray) -> None:
        slot = logical % self.slots
        self.host_flags[slot, np.arange(self.num_envs)] = flags
        self._put("flags", slot * self.num_envs + np.arange(self.num_envs), flags)

    def _put(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """self.<name>.view(-1)[rows] = values. On a CPU through a numpy view of the tensor: the few values
        of a step are written in about a microsecond, where torch's conversions and indexing cost tens."""
        if self.device.type == "cpu":
            self._flat[name][rows] = values
        else:
            getattr(self, name).view(-1)[torch.as_tensor(rows, device=self.device)] = torch.as_tensor(values, device=self.device)

    def _head(self) -> np.ndarray:
        """Logical position of the newest written frame of each env."""
        return self.count - self.episode_start

    def _frames_of(self, x, name: str) -> torch.Tensor:
        x = torch.as_tensor(x, device=self.device)
        if self.stack == 1 and x.shape == (self.num_envs, *self.obs_shape):
            x = x.unsqueeze(1)
        expected = (self.num_envs, self.stack, *self.obs_shape)
        if tuple(x.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {expected} (N, stack, *obs_shape)")
        return x.to(self.obs_dtype)

    def _refresh(self) -> None:
        """Re-evaluates validity on every slot the adds since the last refresh can have changed, and
        writes it to the tree."""
        head, before = self._head(), self.refreshed_head
        if (head == before).all():
            return
        # One compiled call over the few slots a step can change: the numpy operations that did this
        # cost microseconds each, and a step needed dozens of them.
        leaf, valid, fresh = _refresh_loops(self.host_flags, self.count, head, before, self.n_step, self.stack)
        initial = self._initial_priority()
        if self.device.type == "cpu":  # numpy on the tensors' memory, as in _put
            previous = np.where(fresh, 0.0, self._flat["leaves"][leaf])
            priority = np.where(valid, np.where(previous > 0, previous, float(initial)), 0.0)
        else:
            leaf, fresh, valid = (torch.as_tensor(x, device=self.device) for x in (leaf, fresh, valid))
            previous = torch.where(fresh, 0.0, self.tree.get(leaf))
            priority = torch.where(valid, torch.where(previous > 0, previous, initial), 0.0)
        self.tree.update(leaf, priority)
        self.refreshed_head = head

    def _initial_priority(self) -> float | torch.Tensor:
        return 1.0

    # ---------------------------------------------------------------- sampling
    def sample(self, batch_size: int) -> Batch:
        self.prepare_sample(batch_size)
        return self.draw(batch_size)

    def draw(self, batch_size: int) -> Batch:
        """The device half of `sample`, after `prepare_sample`: no host work and no synchronisation, so
        that a CUDA graph can capture it."""
        u = torch.rand(batch_size, generator=self.generator, device=self.device, dtype=torch.float64)
        index = self.tree.find(u * self.tree.total())
        return self._gather(index)

    def prepare_sample(self, batch_size: int) -> None:
        """The host half of `sample`: brings the tree up to date with the adds since the last sample."""
        self._refresh()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not self.sampleable:
            if self.steps_added == 0 or not self.tree.total() > 0:
                raise RuntimeError("the replay holds no complete transition yet; add more steps before sampling")
            self.sampleable = True

    def _gather(self, index: torch.Tensor) -> Batch:
        if self.kernel == "numba":
            action, reward, discount, rows = _gather_loops(*self._host, self.n_step, self.stack, self.capacity,
                                                           self.tree.host_indices(index))
            obs, next_obs = self.store.read(torch.from_numpy(rows)).view(2, -1, self.stack, *self.obs_shape)
            return Batch(obs, torch.from_numpy(action), torch.from_numpy(reward), torch.from_numpy(discount),
                         next_obs, index)
        T, N = self.slots, self.num_envs
        t, env = index // N, index % N
        # n-step return, stopping at the episode's end.
        ahead = (t[:, None] + torch.arange(self.n_step, device=self.device)) % T
        rewards = self.reward[ahead, env[:, None]]
        flags = self.flags[ahead, env[:, None]]
        done = (flags & DONE) != 0
        # alive[:, i]: no episode end among steps 0..i-1
        alive = (done.int().cumsum(1) - done.int()) == 0
        k = alive.sum(1)
        reward = (rewards * self.discounts[: self.n_step] * alive).sum(1)
        terminated = (alive & ((flags & TERMINATED) != 0)).any(1)
        discount = self.discounts[k] * (~terminated)
        obs, next_obs = self._stacks(torch.cat([t, (t + k) % T]), torch.cat([env, env])).chunk(2)
        return Batch(obs, self.action[t, env].long(), reward, discount, next_obs, index)

    def _stacks(self, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Observations whose newest frame is at slot t: [B, stack, *obs_shape], zeros before the
        episode's first frame."""
        back = torch.arange(self.stack, device=self.device)  # newest first
        rows = ((t[:, None] - back) % self.slots) * self.num_envs + env[:, None]
        if self.stack > 1:
            first = ((self.flags.view(-1)[rows] & FIRST) != 0).int()
            # Frame q steps back is cut when one of the q newer frames starts the episode: it reads
            # the zero frame instead.
            rows = torch.where(first.cumsum(1) - first == 0, rows, self.capacity)
        frames = self.store.read(rows.flip(1).reshape(-1)).to(self.device)
        return frames.view(*rows.shape, *self.obs_shape)

    # ---------------------------------------------------------------- state
    def head(self) -> np.ndarray:
        """Logical position of the newest written frame of each env (-1: none yet)."""
        return self._head().copy()

    def oldest_logical(self) -> np.ndarray:
        """Logical position of the oldest frame still stored, per env."""
        return self._head() - self.slots + 1

    def _rows(self, ranges) -> torch.Tensor:
        rows = [(np.arange(lo, hi + 1) % self.slots) * self.num_envs + env for env, (lo, hi) in enumerate(ranges)]
        return torch.as_tensor(np.concatenate(rows), device=self.device)

    def frames_since(self, heads: np.ndarray) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """The frames written after logical position heads[n] in each env and still stored, as
        inclusive logical ranges per env and their frames (on the CPU): what a checkpoint must add."""
        lo = np.maximum(np.asarray(heads) + 1, np.maximum(self.oldest_logical(), 0))
        ranges = [(int(a), int(b)) for a, b in zip(lo, self._head())]
        return ranges, self.store.read(self._rows(ranges)).cpu()

    def write_frames(self, ranges: list[tuple[int, int]], frames: torch.Tensor) -> None:
        self.store.write(self._rows(ranges), frames)

    def state_dict(self) -> dict:
        """Everything but the frames (see frames_since / write_frames, which checkpoints use)."""
        self._refresh()
        return {
            "action": self.action.cpu(),
            "reward": self.reward.cpu(),
            "flags": self.flags.cpu(),
            "tree": self.tree.state_dict(),
            "count": self.count.copy(),
            "episode_start": self.episode_start.copy(),
            "steps_added": self.steps_added,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("action", "reward", "flags"):
            getattr(self, name).copy_(state[name])
        self.host_flags[...] = self.flags.cpu().numpy()
        self.tree.load_state_dict(state["tree"])
        self.count = np.array(state["count"], dtype=np.int64)
        self.episode_start = np.array(state["episode_start"], dtype=bool)
        self.refreshed_head = self._head()
        self.steps_added = int(state["steps_added"])
        self.sampleable = False
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------- CPU kernel (a compiled loop)
# _gather's torch calls are some forty operations on tensors of 32 to 256 elements, each costing
# microseconds on a CPU whatever its size. One compiled loop gives the same batch (the same float32
# products; the n-step sum in step order, which torch may add in another order) in a fraction of the
# time (scripts/bench/end_to_end.py's replay_sample_32, scripts/bench/per.py).


@numba.njit(cache=True, nogil=True)
def _refresh_loops(flags, count, head, before, n_step, stack):
    """The slots whose validity the adds since `before` (each env's newest slot then) can have changed:
    for each env, its newest slots with the n-step windows they complete, and its oldest, whose stack
    history may have been overwritten. Returns their tree leaves, their validity and whether each leaf's
    old value is stale (written since)."""
    T, N = flags.shape
    width = min(np.max(head - before), T) + n_step + 3
    oldest_kept = max(stack - 1, 1)
    leaf = np.empty(N * (width + oldest_kept), np.int64)
    valid = np.empty(leaf.size, np.bool_)
    fresh = np.empty(leaf.size, np.bool_)
    m = 0
    for env in range(N):
        oldest = head[env] - T + 1
        for k in range(width + oldest_kept):
            L = head[env] - k if k < width else oldest + k - width
            if L < max(oldest, 0):
                continue
            leaf[m] = (L % T) * N + env
            valid[m] = _sampleable(flags, count[env], oldest, L, env, n_step, stack)
            fresh[m] = L > before[env]
            m += 1
    return leaf[:m], valid[:m], fresh[:m]


@numba.njit(cache=True, nogil=True, inline="always")
def _sampleable(flags, count, oldest, L, env, n_step, stack):
    """Whether the slot at logical position L of env's column (written `count` slots, the oldest kept at
    `oldest`) holds a sampleable transition."""
    T = flags.shape[0]
    if not (oldest <= L < count) or flags[L % T, env] & FINAL:
        return False
    # n-step future: n transitions added (the last one wrote the bootstrap frame), or an episode end
    # (whose final frame is written with it).
    complete = count - L >= n_step
    for i in range(min(n_step, count - L)):
        if flags[(L + i) % T, env] & DONE:
            complete = True
            break
    if not complete:
        return False
    # Stack history: frame L-j is needed unless the episode starts within (L-j, L].
    for j in range(1, stack):
        if flags[(L - j + 1) % T, env] & FIRST:
            break
        if L - j < oldest:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _gather_loops(actions, rewards, flags, discounts, n_step, stack, zero_row, index):
    """For each slot index (row-major in [T, N]): its action, n-step return and discount, and the frame
    rows of its observation's and its bootstrap observation's stacks, oldest frame first (zero_row
    before the episode's first frame), as [2, B, stack] flattened."""
    T, N, B = flags.shape[0], flags.shape[1], index.size
    action = np.empty(B, dtype=np.int64)
    reward = np.empty(B, dtype=np.float32)
    discount = np.empty(B, dtype=np.float32)
    rows = np.empty((2, B, stack), dtype=np.int64)
    for b in range(B):
        t, env = index[b] // N, index[b] % N
        action[b] = actions[t, env]
        total, k, terminated = np.float32(0.0), 0, False
        for i in range(n_step):  # the return stops at the episode's end
            total += rewards[(t + i) % T, env] * discounts[i]
            k += 1
            flag = flags[(t + i) % T, env]
            if flag & DONE:
                terminated = (flag & TERMINATED) != 0
                break
        reward[b] = total
        discount[b] = 0.0 if terminated else discounts[k]
        for half, newest in ((0, t), (1, (t + k) % T)):
            cut = False  # a frame is cut when a newer one starts the episode
            for back in range(stack):
                slot = (newest - back) % T
                rows[half, b, stack - 1 - back] = zero_row if cut else slot * N + env
                cut = cut or (flags[slot, env] & FIRST) != 0
    return action, reward, discount, rows.reshape(-1)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def available_bytes(device: torch.device) -> int:
    """Free memory on `device`: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(needed: int, device: torch.device, what: str = "replay") -> None:
    """Refuses, before allocating, storage that the device's free memory cannot hold."""
    free = available_bytes(torch.device(device))
    if needed > free:
        raise ReplayTooLargeError(
            f"the {what} needs {needed / 2**30:.2f} GiB on {device} but only {free / 2**30:.2f} GiB is "
            f"available; lower replay.capacity (or use replay.device=cpu)"
        )
