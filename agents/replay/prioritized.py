"""Proportional prioritized replay (Schaul et al. 2016, arXiv:1511.05952) on top of FrameReplay.

P(i) = p_i^alpha / sum_k p_k^alpha with p_i = |delta_i| + eps; a transition enters at the largest
priority seen so far. Importance weights w_i = (M * P(i))^-beta, divided by the largest weight in the
batch (as DQN Zoo does; the memory size M cancels), with beta annealed linearly (to 1 in the paper).
"""

from __future__ import annotations

import numpy as np
import torch

from agents.replay.frame import Batch, FrameReplay

# The compiled kernel's strata draws are made this many at a time: numpy's call costs about as much as
# a thirteenth of a tree round (0.7 microseconds) whatever its size.
UNIFORM_BLOCK = 4096


class PrioritizedReplay(FrameReplay):
    def __init__(
        self,
        *args,
        alpha: float = 0.6,
        beta: float = 0.4,
        beta_end: float = 1.0,
        beta_steps: int = 1,
        eps: float = 1e-6,
        **kwargs,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"priority exponent alpha must be in [0, 1], got {alpha}")
        for name, value in (("beta", beta), ("beta_end", beta_end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"importance exponent {name} must be in [0, 1], got {value}")
        if beta_steps < 1:
            raise ValueError(f"beta_steps must be >= 1, got {beta_steps}")
        if eps <= 0:
            raise ValueError(f"priority eps must be > 0, got {eps}")
        super().__init__(*args, **kwargs)
        self.alpha, self.beta_start, self.beta_end, self.beta_steps, self.eps = alpha, beta, beta_end, beta_steps, eps
        # Largest p^alpha so far, and the current beta: device scalars, updated in place (reading them
        # back would stall a GPU; a CUDA graph reads them where they are).
        self.max_priority = torch.ones((), dtype=torch.float32, device=self.device)
        self.beta_now = torch.full((), self.beta(), dtype=torch.float64, device=self.device)
        if self.kernel == "numba":
            # The compiled tree takes numpy arrays: its strata draws come from numpy, whose call costs a
            # microsecond where torch.rand with a generator costs several (a third of a tree round or more).
            self.host_generator = np.random.default_rng(self.generator.initial_seed())
            self._restart_block()

    def beta(self) -> float:
        """beta, annealed linearly from its start to its end value over beta_steps added transitions."""
        progress = min(1.0, self.steps_added / self.beta_steps)
        return self.beta_start + (self.beta_end - self.beta_start) * progress

    def _initial_priority(self) -> torch.Tensor:
        return self.max_priority

    def prepare_sample(self, batch_size: int) -> None:
        super().prepare_sample(batch_size)
        self.beta_now.fill_(self.beta())

    def uniform(self, batch_size: int) -> torch.Tensor | np.ndarray:
        """The B uniform draws in [0, 1) that place a sample in each stratum (float64)."""
        if self.kernel == "numba":
            # From a block drawn ahead: the same numbers as drawing B at a time, since numpy's generator
            # makes each double from one 64-bit output, in order.
            start = self._used
            if start + batch_size > self._block.size:
                # The generator is taken back to the first draw not handed out, so that none is skipped.
                self.host_generator.bit_generator.state = self._block_start = self._host_generator_state()
                self._block, start = self.host_generator.random(max(UNIFORM_BLOCK, batch_size)), 0
            self._used = start + batch_size
            return self._block[start:self._used]
        return torch.rand(batch_size, generator=self.generator, device=self.device, dtype=torch.float64)

    def _restart_block(self) -> None:
        self._block, self._used, self._block_start = np.empty(0), 0, None

    def _host_generator_state(self) -> dict:
        """The generator's state as if each batch's draws had been made alone: what a checkpoint keeps,
        so that it does not depend on the block size."""
        if self._block_start is None or self._used == self._block.size:
            return self.host_generator.bit_generator.state
        generator = np.random.Generator(type(self.host_generator.bit_generator)())
        generator.bit_generator.state = self._block_start
        generator.random(self._used)
        return generator.bit_generator.state

    def draw(self, batch_size: int) -> Batch:
        index, probability = self.tree.stratified(self.uniform(batch_size))
        batch = self._gather(index)
        weight = (probability / probability.min()) ** -self.beta_now
        batch.weight = weight.float()
        return batch

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """Sets the priority of sampled transitions from their new |TD error| (or loss)."""
        index = index.to(self.device)
        if index.numel() == 0:
            return
        value = (priority.detach().to(self.device, torch.float32).abs() + self.eps) ** self.alpha
        # A slot that stopped being sampleable since it was drawn stays at 0.
        value = torch.where(self.tree.get(index) > 0, value, 0.0)
        self.tree.update(index, value)
        torch.maximum(self.max_priority, value.max(), out=self.max_priority)

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "max_priority": self.max_priority.cpu().clone(), "beta_steps": self.beta_steps}
        if self.kernel == "numba":
            state["host_generator"] = self._host_generator_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores the replay, and the annealing of beta as the run started it: a run resumed with a
        longer budget keeps beta's schedule (annealed over the first budget when it follows the budget)."""
        super().load_state_dict(state)
        self.max_priority.copy_(state["max_priority"])
        self.beta_steps = int(state.get("beta_steps", self.beta_steps))
        if self.kernel == "numba" and "host_generator" in state:  # absent: written by the torch kernel
            self.host_generator.bit_generator.state = state["host_generator"]
            self._restart_block()
