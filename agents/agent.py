"""The one agent of the DQN family: every variant is a switch of AgentConfig on this class.

`act` picks actions for a batch of observations (epsilon-greedy, or greedy through noisy layers);
`learn` takes one gradient step on a replay batch and returns the loss and new priorities; the
target network is synchronised here, by a hard copy every C updates or a Polyak average (every update, or
every `soft_update_period` updates).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import sys

import numpy as np
import torch
from torch import nn

from agents import losses
from agents.config import AgentConfig
from agents.networks import CosineEmbedding, Head, QNetwork, build_torso
from agents.optim import LinearSchedule, build_optimizer
from agents.replay.frame import Batch


def build_network(config: AgentConfig, obs_shape: tuple[int, ...], stack: int, n_actions: int) -> QNetwork:
    torso = build_torso(config.network, obs_shape, stack, tuple(config.mlp_hidden))
    k = {"none": 1, "c51": config.num_atoms, "qr": config.num_quantiles, "iqn": 1}[config.distributional]
    head = Head(torso.out_features, n_actions, k, config.hidden, config.dueling, config.noisy,
                config.noisy_sigma0, config.dueling_grad_scale if config.dueling else 1.0)
    embedding = CosineEmbedding(torso.out_features, config.iqn_embedding) if config.distributional == "iqn" else None
    return QNetwork(torso, head, embedding)


class DQNAgent:
    def __init__(self, config: AgentConfig, obs_shape: tuple[int, ...], stack: int, n_actions: int,
                 device: str | torch.device = "cpu", seed: int = 0, compile: bool = False, bf16: bool = False,
                 reduce_overhead: bool = False):
        """compile: run the loss (forward, targets and, through AOTAutograd, backward) through
        torch.compile; if compilation fails, the first update says so and falls back to eager.
        reduce_overhead: compile with mode="reduce-overhead", which replays the loss's kernels (forward
        and backward) as CUDA graphs; no effect on a CPU. agents.update.UpdateStep(cuda_graph=True)
        captures the whole update instead.
        bf16: compute the loss under bfloat16 autocast (weights and optimizer stay float32)."""
        errors = config.validate()
        if errors:
            raise ValueError("; ".join(errors))
        self.config, self.n_actions, self.device = config, n_actions, torch.device(device)
        self.online = build_network(config, obs_shape, stack, n_actions).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = build_optimizer(self.online.parameters(), config.optimizer, config.learning_rate,
                                         config.optimizer_eps, config.rmsprop_decay, config.rmsprop_momentum,
                                         config.rmsprop_initial_square)
        self.epsilon = LinearSchedule(config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps,
                                      delay=config.learning_starts_steps)
        self.support = torch.linspace(config.v_min, config.v_max, config.num_atoms, device=self.device)
        n = config.num_quantiles
        self.quantile_fractions = (2 * torch.arange(n, device=self.device) + 1) / (2 * n)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.updates = 0
        self.bf16 = bf16
        self._loss = getattr(self, f"_loss_{config.distributional}")
        self.reduce_overhead = compile and reduce_overhead
        mode = "reduce-overhead" if self.reduce_overhead else None
        self._compiled = torch.compile(self._loss, dynamic=False, mode=mode) if compile else None

    # ------------------------------------------------------------------ acting
    def q_values(self, obs: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        """Expected action values [B, A] under `network` (default: the online one)."""
        network = self.online if network is None else network
        kind = self.config.distributional
        if kind == "iqn":
            taus = torch.rand(obs.shape[0], self.config.iqn_k, device=self.device, generator=self.generator)
            return network(obs, taus).mean(-1)
        out = network(obs)
        if kind == "c51":
            return (out.softmax(-1) * self.support).sum(-1)
        return out.mean(-1)  # the value (K = 1), or the mean of the quantiles

    @torch.no_grad()
    def act(self, obs, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations. The network runs only when some action of
        the batch is greedy (never at epsilon 1: the replay warm-up)."""
        if epsilon >= 1.0:
            return torch.randint(self.n_actions, (len(obs),), device=self.device, generator=self.generator).cpu().numpy()
        if epsilon > 0:
            explore = torch.rand(len(obs), device=self.device, generator=self.generator) < epsilon
            random = torch.randint(self.n_actions, (len(obs),), device=self.device, generator=self.generator)
            if bool(explore.all()):  # as SB3 and CleanRL do: no forward pass that no action would use
                return random.cpu().numpy()
        greedy = self.q_values(torch.as_tensor(obs, device=self.device)).argmax(1)
        if epsilon > 0:
            greedy = torch.where(explore, random, greedy)
        return greedy.cpu().numpy()

    def actor(self, seed: int) -> DQNAgent:
        """A copy that acts with the current network and its own random stream (for evaluation while
        this agent goes on learning)."""
        actor = copy.copy(self)
        actor.online = copy.deepcopy(self.online)
        actor.generator = torch.Generator(device=self.device)
        actor.generator.manual_seed(seed)
        return actor

    @contextlib.contextmanager
    def evaluating(self):
        """Noisy layers use their mean weights while evaluating (as Dopamine and Kaixhin/Rainbow do)."""
        self.online.eval()
        try:
            yield
        finally:
            self.online.train()

    # ------------------------------------------------------------------ learning
    def learn(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One gradient step, counted, and the target network synchronised when due. Returns loss, mean
        Q of the taken actions and per-sample priorities (|TD error|, or the distributional loss), all
        as tensors on the device."""
        out = self.gradient_step(batch)
        self.step_done()
        return out

    def gradient_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The device work of `learn` (no host synchronisation: a CUDA graph can capture it)."""
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            per_sample, priority, q_taken = self._losses(batch)
        per_sample, priority, q_taken = per_sample.float(), priority.float(), q_taken.float()
        loss = (per_sample * batch.weight).mean() if batch.weight is not None else per_sample.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return {"loss": loss.detach(), "q": q_taken.detach().mean(), "priority": priority.detach()}

    def step_done(self) -> None:
        """The host half of `learn`: counts the update and synchronises the target network when due."""
        self.updates += 1
        self._update_target()

    def _losses(self, batch: Batch):
        if self._compiled is not None:
            try:
                if self.reduce_overhead:
                    # Each update is a new step: the graphs' outputs of the last one are no longer read.
                    torch.compiler.cudagraph_mark_step_begin()
                return self._compiled(batch)
            except Exception as e:  # noqa: BLE001 - no compiler, unsupported op...: eager still works
                print(f"warning: torch.compile failed ({type(e).__name__}: {e}); continuing eager", file=sys.stderr)
                self._compiled = None
        return self._loss(batch)

    def _update_target(self) -> None:
        c = self.config
        if c.target_update == "soft":
            if self.updates % c.soft_update_period:
                return
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.online.parameters()):
                    t.lerp_(o, c.target_tau)
        elif self.updates % c.target_period_updates == 0:
            self.target.load_state_dict(self.online.state_dict())

    def _taken(self, out: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """out [B, A, K] -> [B, K] at the taken (or chosen) actions."""
        return out[torch.arange(out.shape[0], device=out.device), action]

    def _online_and_next(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Online outputs on obs and, for double Q-learning, on next_obs (without a graph: backward
        then runs over the batch, not over twice the batch)."""
        if not self.config.double:
            return self.online(batch.obs), None
        with torch.no_grad():
            online_next = self.online(batch.next_obs)
        return self.online(batch.obs), online_next

    def _loss_none(self, batch: Batch):
        c = self.config
        out, online_next = self._online_and_next(batch)
        q = self._taken(out, batch.action).squeeze(1)
        with torch.no_grad():
            if c.munchausen:
                y = self._munchausen_target(batch)
            else:
                next_q_t = self.target(batch.next_obs)[..., 0]
                select = online_next[..., 0] if c.double else next_q_t
                y = losses.td_target(batch.reward, batch.discount, losses.greedy_bootstrap(next_q_t, select))
        return losses.value_loss(q, y, c.scalar_loss), (y - q).abs(), q

    def _munchausen_target(self, batch: Batch) -> torch.Tensor:
        c = self.config
        # In float32 even under bfloat16 autocast: dividing Q by tau = 0.03 magnifies bfloat16's rounding
        # (8 bits of mantissa, 0.06 at Q = 10) into errors of tens of percent in the bonus tau log pi.
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            both = self.target(torch.cat([batch.obs, batch.next_obs]))[..., 0]
        q_t, next_q_t = both.chunk(2)
        return losses.munchausen_target(batch.reward, batch.discount, batch.action, q_t, next_q_t,
                                        c.munchausen_tau, c.munchausen_alpha, c.munchausen_l0)

    def _loss_c51(self, batch: Batch):
        logits, online_next = self._online_and_next(batch)
        log_p = self._taken(logits, batch.action).log_softmax(-1)
        with torch.no_grad():
            next_p = self.target(batch.next_obs).softmax(-1)
            select = online_next.softmax(-1) if self.config.double else next_p
            best = (select * self.support).sum(-1).argmax(1)
            m = losses.categorical_projection(self._taken(next_p, best), batch.reward, batch.discount, self.support)
        ce = -(m * log_p).sum(-1)
        priority = ce
        if self.config.c51_priority == "kl":
            # KL(m || p) = cross-entropy - H(m): the same gradient, but the target's own entropy, large for a
            # spread-out target and 0 for a terminal one on an atom, no longer sets a floor under the priority.
            priority = (ce + torch.special.xlogy(m, m).sum(-1)).clamp(min=0)  # >= 0 up to rounding
        return ce, priority, (log_p.exp() * self.support).sum(-1)

    def _loss_qr(self, batch: Batch):
        out, online_next = self._online_and_next(batch)
        theta = self._taken(out, batch.action)
        with torch.no_grad():
            next_theta = self.target(batch.next_obs)
            select = online_next if self.config.double else next_theta
            best = select.mean(-1).argmax(1)
            y = batch.reward[:, None] + batch.discount[:, None] * self._taken(next_theta, best)
        loss = losses.quantile_huber_loss(theta, y, self.quantile_fractions, self.config.kappa)
        return loss, loss, theta.mean(-1)

    def _loss_iqn(self, batch: Batch):
        c, b = self.config, batch.obs.shape[0]
        taus = torch.rand(b, c.iqn_n, device=self.device)
        z = self._taken(self.online(batch.obs, taus), batch.action)
        with torch.no_grad():
            taus_next = torch.rand(b, c.iqn_n_prime, device=self.device)
            next_z = self.target(batch.next_obs, taus_next)
            best = self.q_values(batch.next_obs, self.online if c.double else self.target).argmax(1)
            y = batch.reward[:, None] + batch.discount[:, None] * self._taken(next_z, best)
        loss = losses.quantile_huber_loss(z, y, taus, c.kappa)
        return loss, loss, z.mean(-1)

    # ------------------------------------------------------------------ state
    def params_sha256(self) -> str:
        """SHA-256 of the online network's parameters and buffers, in key order."""
        h = hashlib.sha256()
        for key, value in sorted(self.online.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def state_dict(self) -> dict:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self.generator.set_state(state["generator"])
