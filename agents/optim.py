"""Optimizers and schedules the papers use, where PyTorch lacks them or is slow on a CPU."""

from __future__ import annotations

import numba
import numpy as np
import torch


class CenteredRMSprop(torch.optim.Optimizer):
    """Centered RMSProp in the two forms the papers' code uses.

    eps_in_root=True, DeepMind's (Graves 2013, used by Mnih et al. 2015):

        g  <- decay g  + (1 - decay) grad
        g2 <- decay g2 + (1 - decay) grad^2
        w  <- w - lr grad / sqrt(g2 - g^2 + eps)

    With a batch-mean loss, eps = 0.01 / 32^2 reproduces the Nature paper's summed-loss update with min
    squared gradient 0.01 (DQN Zoo's choice).

    eps_in_root=False, PyTorch's torch.optim.RMSprop(centered=True) (MinAtar's reference code): eps after
    the root, and an optional momentum buffer b <- momentum b + grad / (sqrt(g2 - g^2) + eps),
    w <- w - lr b. The two differ wherever g2 - g^2 is comparable to eps.

    g2 starts at `initial_square`: 0 in both, 1 in TensorFlow 1's RMSPropOptimizer (Dopamine's DQN), whose
    first updates are then about lr grad until the ones decay away (a few hundred updates at decay 0.95).
    """

    def __init__(self, params, lr: float, decay: float = 0.95, eps: float = 0.01 / 32**2, eps_in_root: bool = True,
                 momentum: float = 0.0, initial_square: float = 0.0):
        if (lr <= 0 or not 0 <= decay < 1 or eps <= 0 or not 0 <= momentum < 1 or (momentum and eps_in_root)
                or initial_square < 0):
            raise ValueError(f"CenteredRMSprop needs lr > 0, 0 <= decay < 1, eps > 0, 0 <= momentum < 1 (only with "
                             f"eps_in_root=False), initial_square >= 0; got {lr}, {decay}, {eps}, {momentum}, "
                             f"{initial_square}")
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, eps_in_root=eps_in_root, momentum=momentum,
                                      initial_square=initial_square))
        self._scratch: dict[torch.Tensor, torch.Tensor] = {}
        self._views: dict[torch.Tensor, tuple] = {}  # see _host_views

    def __setstate__(self, state: dict) -> None:
        # Checkpoints written before the PyTorch form existed: DeepMind's groups lack its two settings, and
        # `rmsprop` runs saved torch.optim.RMSprop's groups (same state names, its decay called alpha).
        super().__setstate__(state)
        self.__dict__.setdefault("_scratch", {})  # an unpickled optimizer: its caches start empty
        self.__dict__.setdefault("_views", {})
        for group in self.param_groups:
            if "alpha" in group and "decay" not in group:
                group.update(decay=group["alpha"], eps_in_root=False)
            group.setdefault("eps_in_root", True)
            group.setdefault("momentum", 0.0)
            group.setdefault("initial_square", 0.0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, decay, eps, momentum = group["lr"], group["decay"], group["eps"], group["momentum"]
            eps_in_root = group["eps_in_root"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["grad_avg"] = torch.zeros_like(p)
                    self.state[p]["square_avg"] = torch.full_like(p, group["initial_square"])
                    if momentum:
                        self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            grads = [p.grad for p in params]
            g = [self.state[p]["grad_avg"] for p in params]
            g2 = [self.state[p]["square_avg"] for p in params]
            # Without momentum the loop is handed g in place of the buffer it then never touches.
            b = [self.state[p]["momentum_buffer"] for p in params] if momentum else g
            host = self._host_views(params, grads, g, g2, b)
            if host is not None:
                # On a CPU the multi-tensor ops below are eight passes over memory (about 9 ms for Nature
                # DQN's 1.7M weights on one core); one compiled loop per tensor makes one pass (about 2 ms).
                scalars = (np.float32(lr), np.float32(decay), np.float32(1 - decay), np.float32(eps), eps_in_root,
                           np.float32(momentum))
                for views in host:
                    _centered_rmsprop_loop(*views, *scalars)
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
            if eps_in_root:
                torch._foreach_add_(denominator, eps)
                torch._foreach_sqrt_(denominator)
            else:
                torch._foreach_sqrt_(denominator)
                torch._foreach_add_(denominator, eps)
            if momentum:
                torch._foreach_mul_(b, momentum)
                torch._foreach_addcdiv_(b, grads, denominator)
                torch._foreach_add_(params, b, alpha=-lr)
            else:
                torch._foreach_addcdiv_(params, grads, denominator, value=-lr)

    def _host_views(self, params, grads, g, g2, b) -> list[tuple[np.ndarray, ...]] | None:
        """Flat numpy views of each parameter, its gradient and its state, in the compiled loop's order,
        or None unless all are float32 on the CPU and laid out alike. The views of the parameter and its
        state are kept from step to step, while they view the same tensors at the same addresses: made
        afresh at every step, they cost more than the loops themselves on a small network (MinAtar's)."""
        views = []
        for p, grad, *kept in zip(params, grads, g, g2, b):
            tensors = (p, *kept)
            addresses = [t.data_ptr() for t in tensors]
            entry = self._views.get(p)
            if entry is None or entry[1] != addresses or any(a is not t for a, t in zip(entry[0], tensors)):
                if not _flat_cpu_float32(*tensors):
                    return None
                entry = self._views[p] = (tensors, addresses, [_flat(t).numpy() for t in tensors])
            if not _flat_cpu_float32(p, grad):
                return None
            w, *state = entry[2]
            views.append((w, _flat(grad).numpy(), *state))
        return views


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
def _centered_rmsprop_loop(w, grad, g, g2, b, lr, decay, one_minus_decay, eps, eps_in_root, momentum):
    """The multi-tensor path's arithmetic, element by element and in its order (float32 throughout)."""
    for i in range(w.size):
        x = grad[i]
        g[i] = g[i] + one_minus_decay * (x - g[i])
        g2[i] = g2[i] * decay + one_minus_decay * x * x
        variance = g2[i] + -g[i] * g[i]
        denominator = np.sqrt(variance + eps) if eps_in_root else np.sqrt(variance) + eps
        if momentum:
            b[i] = b[i] * momentum + x / denominator
            w[i] = w[i] + -lr * b[i]
        else:
            w[i] = w[i] + -lr * x / denominator


def build_optimizer(params, name: str, lr: float, eps: float, rmsprop_decay: float = 0.95,
                    rmsprop_momentum: float = 0.0, rmsprop_initial_square: float = 0.0) -> torch.optim.Optimizer:
    if name == "adam":
        # The fused kernel (CPU and CUDA) is about 1.5x faster than the per-tensor loop on small networks.
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    if name == "centered_rmsprop":
        return CenteredRMSprop(params, lr=lr, decay=rmsprop_decay, eps=eps, initial_square=rmsprop_initial_square)
    if name == "rmsprop":  # PyTorch's (centered, eps outside the root), as MinAtar's reference code uses
        return CenteredRMSprop(params, lr=lr, decay=rmsprop_decay, eps=eps, eps_in_root=False, momentum=rmsprop_momentum,
                               initial_square=rmsprop_initial_square)
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
