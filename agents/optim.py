"""Optimizers and schedules the papers use that PyTorch lacks."""

from __future__ import annotations

import numba
import numpy as np
import torch


class CenteredRMSprop(torch.optim.Optimizer):
    """DeepMind's RMSProp (Graves 2013, used by Mnih et al. 2015), epsilon inside the square root:

        g  <- decay g  + (1 - decay) grad
        g2 <- decay g2 + (1 - decay) grad^2
        w  <- w - lr grad / sqrt(g2 - g^2 + eps)

    torch.optim.RMSprop(centered=True) adds eps after the square root instead, which changes the
    update wherever g2 - g^2 is comparable to eps. With a batch-mean loss, eps = 0.01 / 32^2
    reproduces the Nature paper's summed-loss update with min squared gradient 0.01 (DQN Zoo's choice).
    """

    def __init__(self, params, lr: float, decay: float = 0.95, eps: float = 0.01 / 32**2):
        if lr <= 0 or not 0 <= decay < 1 or eps <= 0:
            raise ValueError(f"CenteredRMSprop needs lr > 0, 0 <= decay < 1, eps > 0; got {lr}, {decay}, {eps}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, decay, eps = group["lr"], group["decay"], group["eps"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["grad_avg"] = torch.zeros_like(p)
                    self.state[p]["square_avg"] = torch.zeros_like(p)
            grads = [p.grad for p in params]
            g = [self.state[p]["grad_avg"] for p in params]
            g2 = [self.state[p]["square_avg"] for p in params]
            if all(_flat_cpu_float32(*tensors) for tensors in zip(params, grads, g, g2)):
                # On a CPU the multi-tensor ops below are eight passes over memory (about 9 ms for Nature
                # DQN's 1.7M weights on one core); one compiled loop per tensor makes one pass (about 2 ms).
                scalars = np.float32(lr), np.float32(decay), np.float32(1 - decay), np.float32(eps)
                for tensors in zip(params, grads, g, g2):
                    _centered_rmsprop_loop(*(_flat(t).numpy() for t in tensors), *scalars)
                continue
            for p in params:
                if p not in self._scratch:
                    self._scratch[p] = torch.empty_like(p)
            # The denominator is written into buffers kept from step to step: freshly allocated ones
            # cost a page fault per 4 kB on a CPU (glibc returns blocks this large to the system when
            # they are freed), which made the step twice as slow. Not state: rebuilt at every step.
            denominator = [self._scratch[p] for p in params]
            # Multi-tensor ops (as torch.optim's own optimizers use): a handful of kernel launches for
            # the whole network instead of five per parameter, which is what an update costs on a GPU.
            torch._foreach_lerp_(g, grads, 1 - decay)
            torch._foreach_mul_(g2, decay)
            torch._foreach_addcmul_(g2, grads, grads, value=1 - decay)
            torch._foreach_copy_(denominator, g2)
            torch._foreach_addcmul_(denominator, g, g, value=-1)
            torch._foreach_add_(denominator, eps)
            torch._foreach_sqrt_(denominator)
            torch._foreach_addcdiv_(params, grads, denominator, value=-lr)


def _flat_cpu_float32(*tensors: torch.Tensor) -> bool:
    """Whether the tensors are float32 on a CPU and laid out alike, densely (so that element i of one
    flat view is element i of the others)."""
    first = tensors[0]
    dense = first.is_contiguous() or (first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last))
    return dense and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.stride() == first.stride()
                         and t.shape == first.shape for t in tensors)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().as_strided((t.numel(),), (1,))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _centered_rmsprop_loop(w, grad, g, g2, lr, decay, one_minus_decay, eps):
    """The multi-tensor path's arithmetic, element by element and in its order (float32 throughout)."""
    for i in range(w.size):
        x = grad[i]
        g[i] = g[i] + one_minus_decay * (x - g[i])
        g2[i] = g2[i] * decay + one_minus_decay * x * x
        w[i] = w[i] + -lr * x / np.sqrt(g2[i] + -g[i] * g[i] + eps)


def build_optimizer(params, name: str, lr: float, eps: float, rmsprop_decay: float = 0.95,
                    rmsprop_momentum: float = 0.0) -> torch.optim.Optimizer:
    if name == "adam":
        # The fused kernel (CPU and CUDA) is about 1.5x faster than the per-tensor loop on small networks.
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    if name == "centered_rmsprop":
        return CenteredRMSprop(params, lr=lr, decay=rmsprop_decay, eps=eps)
    if name == "rmsprop":  # PyTorch's own (centered, eps outside the root), as MinAtar's reference code uses
        return torch.optim.RMSprop(params, lr=lr, alpha=rmsprop_decay, eps=eps, momentum=rmsprop_momentum, centered=True)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, centered_rmsprop, rmsprop")


class LinearSchedule:
    """Holds `start` for `delay` steps, then moves linearly to `end` over `duration` steps.

    The epsilon of DQN's exploration: 1.0 during the replay warm-up, then annealed (Mnih et al. 2015).
    """

    def __init__(self, start: float, end: float, duration: int, delay: int = 0):
        self.start, self.end, self.duration, self.delay = start, end, max(duration, 0), delay

    def __call__(self, step: int) -> float:
        if self.duration == 0:
            return self.end if step >= self.delay else self.start
        progress = min(max(step - self.delay, 0) / self.duration, 1.0)
        return self.start + (self.end - self.start) * progress
