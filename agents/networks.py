"""Q-networks: a torso that turns an observation into features, and a head that turns features into
per-action outputs [B, A, K] (K = 1 value, K atoms' logits, or K quantiles).

Everything the DQN family varies in the network is here: Nature CNN and smaller torsos, dueling
streams, noisy linear layers, and the cosine quantile embedding of IQN.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


# ------------------------------------------------------------------ torsos
class NatureCNN(nn.Module):
    """Mnih et al. 2015: 32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions, ReLU. uint8 frames are scaled to
    [0, 1] here, on the network's device, so the replay and the host only ever move bytes."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.out_features = 64 * 7 * 7

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(obs.float() / 255.0)


class DataEfficientCNN(nn.Module):
    """van Hasselt et al. 2019 (data-efficient Rainbow): 32 5x5/5, 64 5x5/5 convolutions."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, stride=5), nn.ReLU(),
            nn.Conv2d(32, 64, 5, stride=5), nn.ReLU(),
            nn.Flatten(),
        )
        self.out_features = 64 * 3 * 3

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.convs(obs.float() / 255.0)


class MLP(nn.Module):
    """For vector observations [B, stack, d] (CartPole, bit flipping): flattened, then hidden layers."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (128, 128)):
        super().__init__()
        layers, width = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(obs.float())


class MinAtarCNN(nn.Module):
    """Young & Tian 2019: one 16-filter 3x3/1 convolution over the 10x10 channels, ReLU."""

    def __init__(self, in_channels: int, size: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, stride=1)
        self.out_features = 16 * (size - 2) ** 2

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # MinAtar observations [B, stack, 10, 10, C] (or [B, 10, 10, C] unstacked) of booleans -> channels first.
        if obs.dim() == 4:
            obs = obs.unsqueeze(1)
        b, s, h, w, c = obs.shape
        # Copied to a contiguous layout: the permuted view is channels-last in memory, which makes the
        # convolution's output channels-last too, and the backward pass of its ReLU (its gradient arrives
        # contiguous) then takes a far slower mixed-layout path on a CPU.
        x = obs.permute(0, 1, 4, 2, 3).reshape(b, s * c, h, w).to(torch.float32, memory_format=torch.contiguous_format)
        return F.relu(self.conv(x)).flatten(1)


# ------------------------------------------------------------------ layers
class NoisyLinear(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018, arXiv:1706.10295, section 3).

    y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = f(eps_out) f(eps_in)^T,
    eps_b = f(eps_out), f(x) = sgn(x) sqrt|x|. Initialisation: mu ~ U[-1/sqrt(p), 1/sqrt(p)],
    sigma = sigma0 / sqrt(p), p the fan-in. In training mode every forward pass draws new noise;
    in evaluation mode the layer is deterministic (mean weights).
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))

    @staticmethod
    def _f(x: torch.Tensor) -> torch.Tensor:
        return x.sign() * x.abs().sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        eps_in = self._f(torch.randn(self.in_features, device=x.device))
        eps_out = self._f(torch.randn(self.out_features, device=x.device))
        weight = self.weight_mu + self.weight_sigma * torch.outer(eps_out, eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * eps_out)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def linear(in_features: int, out_features: int, noisy: bool, sigma0: float) -> nn.Module:
    return NoisyLinear(in_features, out_features, sigma0) if noisy else nn.Linear(in_features, out_features)


# ------------------------------------------------------------------ heads
class Head(nn.Module):
    """Features [B, D] -> outputs [B, A, K] through one hidden layer; dueling or plain.

    Dueling (Wang et al. 2016, arXiv:1511.06581, eq. 9): Q = V + (A - mean_a A), per atom or quantile
    when K > 1 (as in Rainbow). `grad_scale` multiplies the gradient flowing back into the torso
    (1/sqrt(2) in the dueling paper, because two streams feed it).
    """

    def __init__(self, in_features: int, n_actions: int, k: int = 1, hidden: int = 512, dueling: bool = False,
                 noisy: bool = False, sigma0: float = 0.5, grad_scale: float = 1.0):
        super().__init__()
        self.n_actions, self.k, self.dueling, self.grad_scale = n_actions, k, dueling, grad_scale

        def stream(out):
            return nn.Sequential(linear(in_features, hidden, noisy, sigma0), nn.ReLU(), linear(hidden, out, noisy, sigma0))

        self.advantage = stream(n_actions * k)
        self.value = stream(k) if dueling else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.grad_scale != 1.0:
            features = _ScaleGrad.apply(features, self.grad_scale)
        lead = features.shape[:-1]
        out = self.advantage(features).view(*lead, self.n_actions, self.k)
        if self.dueling:
            value = self.value(features).view(*lead, 1, self.k)
            out = dueling_aggregate(value, out)
        return out


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Q = V + A - mean over actions of A; value [..., 1, K], advantage [..., A, K]."""
    return value + advantage - advantage.mean(dim=-2, keepdim=True)


class CosineEmbedding(nn.Module):
    """IQN's embedding of quantile fractions (Dabney et al. 2018b, arXiv:1806.06923, eq. 4):
    phi_j(tau) = ReLU(sum_{i<n} cos(pi i tau) w_ij + b_j)."""

    def __init__(self, out_features: int, n: int = 64):
        super().__init__()
        self.register_buffer("i", torch.arange(n, dtype=torch.float32) * math.pi, persistent=False)
        self.linear = nn.Linear(n, out_features)

    def forward(self, taus: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(torch.cos(taus.unsqueeze(-1) * self.i)))


class QNetwork(nn.Module):
    """torso -> head. For IQN, forward(obs, taus [B, T]) gives [B, A, T]; otherwise [B, A, K]."""

    def __init__(self, torso: nn.Module, head: Head, embedding: CosineEmbedding | None = None):
        super().__init__()
        self.torso, self.head, self.embedding = torso, head, embedding

    def forward(self, obs: torch.Tensor, taus: torch.Tensor | None = None) -> torch.Tensor:
        features = self.torso(obs)
        if self.embedding is None:
            return self.head(features)
        mixed = features.unsqueeze(1) * self.embedding(taus)  # [B, T, D]
        return self.head(mixed).squeeze(-1).transpose(1, 2)  # [B, T, A, 1] -> [B, A, T]


TORSOS = ("nature_cnn", "data_efficient_cnn", "mlp", "minatar_cnn")


def build_torso(name: str, obs_shape: tuple[int, ...], stack: int, mlp_hidden: tuple[int, ...]) -> nn.Module:
    if name == "nature_cnn":
        return NatureCNN(stack)
    if name == "data_efficient_cnn":
        return DataEfficientCNN(stack)
    if name == "mlp":
        return MLP(stack * math.prod(obs_shape), mlp_hidden)
    if name == "minatar_cnn":
        return MinAtarCNN(obs_shape[-1] * stack, obs_shape[0])
    raise ValueError(f"unknown network {name!r}; known networks: {', '.join(TORSOS)}")
