"""The agent's configuration: every switch of the DQN family, with its unit in its name or comment.

Units: an agent step is one action of one environment (frame_skip emulator frames on Atari), counted
over all parallel environments; an update is one gradient step on one minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DISTRIBUTIONAL = ("none", "c51", "qr", "iqn")
HINDSIGHT = ("none", "future", "final", "episode")
C51_PRIORITIES = ("cross_entropy", "kl")
LOSSES = ("auto", "huber", "mse")
OPTIMIZERS = ("adam", "centered_rmsprop", "rmsprop")
TARGET_UPDATES = ("hard", "soft")


@dataclass
class AgentConfig:
    # Network
    network: str = "nature_cnn"  # torso: nature_cnn | data_efficient_cnn | mlp | minatar_cnn
    mlp_hidden: list[int] = field(default_factory=lambda: [128, 128])  # mlp torso layer widths
    hidden: int = 512  # units in the head's hidden layer (each stream's, when dueling)
    dueling: bool = False  # Wang et al. 2016
    dueling_grad_scale: float = 1.0  # gradient into the torso scaled by this (dueling paper: 1/sqrt(2))
    noisy: bool = False  # Fortunato et al. 2018: noisy head layers, no epsilon-greedy
    noisy_sigma0: float = 0.5  # factorised noise: sigma initialised to sigma0 / sqrt(fan_in)
    # Return distribution
    distributional: str = "none"  # none | c51 | qr | iqn
    num_atoms: int = 51  # c51: atoms on [v_min, v_max]
    v_min: float = -10.0
    v_max: float = 10.0
    num_quantiles: int = 200  # qr: quantiles at fractions (2i - 1) / 2N
    iqn_n: int = 64  # iqn: fractions sampled for the online network (N)
    iqn_n_prime: int = 64  # iqn: fractions sampled for the target (N')
    iqn_k: int = 32  # iqn: fractions sampled to act and to pick the greedy next action (K)
    iqn_embedding: int = 64  # iqn: cosine basis functions
    kappa: float = 1.0  # qr, iqn: Huber threshold of the quantile loss
    # Target
    gamma: float = 0.99  # discount per agent step
    n_step: int = 1  # n-step returns (stop at episode ends)
    double: bool = False  # van Hasselt et al. 2016: online net selects, target net evaluates
    munchausen: bool = False  # Vieillard et al. 2020
    munchausen_alpha: float = 0.9
    munchausen_tau: float = 0.03  # entropy temperature
    munchausen_l0: float = -1.0  # lower clip of tau * log pi
    loss: str = "auto"  # scalar heads: huber | mse (auto: huber); distributional heads use their own
    # Replay sampling
    prioritized: bool = False  # Schaul et al. 2016, proportional
    priority_alpha: float = 0.6  # priority exponent
    priority_beta: float = 0.4  # importance-sampling exponent at the start, annealed linearly ...
    priority_beta_end: float = 1.0  # ... to this value ...
    priority_beta_steps: int = 0  # ... over this many agent steps (0: the run's whole budget)
    priority_eps: float = 1e-6  # added to |TD error| so every transition keeps a chance
    c51_priority: str = "cross_entropy"  # c51 + prioritized: cross_entropy (DQN Zoo, Dopamine) | kl (Hessel et al. 2018)
    hindsight: str = "none"  # Andrychowicz et al. 2017, goal-conditioned tasks: none | future | final | episode
    hindsight_k: int = 4  # relabelled goals per real goal (a sampled goal is relabelled with p = k / (k + 1))
    batch_size: int = 32  # transitions per update
    update_period_steps: int = 4  # agent steps per gradient update
    learning_starts_steps: int = 50_000  # agent steps of experience before the first update
    # Optimisation
    optimizer: str = "adam"  # adam | centered_rmsprop (DeepMind's, eps inside the root) | rmsprop (PyTorch's)
    learning_rate: float = 6.25e-5
    optimizer_eps: float = 1.5e-4
    rmsprop_decay: float = 0.95  # both running averages of the RMSProp variants
    rmsprop_momentum: float = 0.0  # PyTorch rmsprop only
    rmsprop_initial_square: float = 0.0  # where the mean of squared gradients starts (TensorFlow 1's: 1.0)
    max_grad_norm: float = 0.0  # clip the global gradient norm to this; 0: off
    target_update: str = "hard"  # hard: copy every target_period_steps; soft: Polyak with target_tau
    target_period_steps: int = 10_000  # agent steps between hard copies
    target_tau: float = 0.005  # soft: target <- tau * online + (1 - tau) * target ...
    soft_update_period: int = 1  # ... every this many updates (HER: once per cycle of 40 updates)
    # Exploration (epsilon-greedy; must be 0 with noisy nets)
    epsilon_start: float = 1.0  # held until learning starts
    epsilon_end: float = 0.1
    epsilon_decay_steps: int = 1_000_000  # agent steps of linear decay after learning starts

    def validate(self) -> list[str]:
        """Every problem with this configuration, as messages naming the key, its value and what is allowed."""
        errors = []

        def need(ok: bool, message: str):
            if not ok:
                errors.append(message)

        def one_of(key, allowed):
            need(getattr(self, key) in allowed, f"agent.{key} = {getattr(self, key)!r}; allowed: {', '.join(allowed)}")

        one_of("distributional", DISTRIBUTIONAL)
        one_of("loss", LOSSES)
        one_of("optimizer", OPTIMIZERS)
        one_of("target_update", TARGET_UPDATES)
        one_of("hindsight", HINDSIGHT)
        one_of("c51_priority", C51_PRIORITIES)
        need(0.0 <= self.gamma <= 1.0, f"agent.gamma = {self.gamma}; must be in [0, 1]")
        need(self.n_step >= 1, f"agent.n_step = {self.n_step}; must be >= 1")
        need(self.num_atoms >= 2, f"agent.num_atoms = {self.num_atoms}; must be >= 2")
        need(self.v_min < self.v_max, f"agent.v_min = {self.v_min} must be < agent.v_max = {self.v_max}")
        need(self.num_quantiles >= 1, f"agent.num_quantiles = {self.num_quantiles}; must be >= 1")
        for key in ("iqn_n", "iqn_n_prime", "iqn_k", "iqn_embedding", "batch_size", "update_period_steps",
                    "target_period_steps", "hidden", "soft_update_period"):
            need(getattr(self, key) >= 1, f"agent.{key} = {getattr(self, key)}; must be >= 1")
        need(self.learning_starts_steps >= 0, f"agent.learning_starts_steps = {self.learning_starts_steps}; must be >= 0")
        need(self.kappa >= 0, f"agent.kappa = {self.kappa}; must be >= 0")
        need(0.0 <= self.priority_alpha <= 1.0, f"agent.priority_alpha = {self.priority_alpha}; must be in [0, 1]")
        need(0.0 <= self.priority_beta <= 1.0, f"agent.priority_beta = {self.priority_beta}; must be in [0, 1]")
        need(0.0 <= self.priority_beta_end <= 1.0, f"agent.priority_beta_end = {self.priority_beta_end}; must be in [0, 1]")
        need(self.priority_beta_steps >= 0, f"agent.priority_beta_steps = {self.priority_beta_steps}; must be >= 0")
        need(self.priority_eps > 0, f"agent.priority_eps = {self.priority_eps}; must be > 0")
        need(self.learning_rate > 0, f"agent.learning_rate = {self.learning_rate}; must be > 0")
        need(self.optimizer_eps > 0, f"agent.optimizer_eps = {self.optimizer_eps}; must be > 0")
        need(0.0 <= self.rmsprop_decay < 1.0, f"agent.rmsprop_decay = {self.rmsprop_decay}; must be in [0, 1)")
        need(self.rmsprop_initial_square >= 0, f"agent.rmsprop_initial_square = {self.rmsprop_initial_square}; must be >= 0")
        need(self.rmsprop_initial_square == 0 or self.optimizer != "adam",
             f"agent.rmsprop_initial_square = {self.rmsprop_initial_square} applies to the RMSProp optimizers only; "
             f"agent.optimizer is {self.optimizer!r}")
        need(self.max_grad_norm >= 0, f"agent.max_grad_norm = {self.max_grad_norm}; must be >= 0 (0: off)")
        need(0.0 < self.target_tau <= 1.0, f"agent.target_tau = {self.target_tau}; must be in (0, 1]")
        need(self.noisy_sigma0 >= 0, f"agent.noisy_sigma0 = {self.noisy_sigma0}; must be >= 0")
        need(self.dueling_grad_scale > 0, f"agent.dueling_grad_scale = {self.dueling_grad_scale}; must be > 0")
        need(self.munchausen_tau > 0, f"agent.munchausen_tau = {self.munchausen_tau}; must be > 0")
        need(self.munchausen_l0 <= 0, f"agent.munchausen_l0 = {self.munchausen_l0}; must be <= 0")
        need(all(h >= 1 for h in self.mlp_hidden), f"agent.mlp_hidden = {self.mlp_hidden}; widths must be >= 1")
        for key in ("epsilon_start", "epsilon_end"):
            need(0.0 <= getattr(self, key) <= 1.0, f"agent.{key} = {getattr(self, key)}; must be in [0, 1]")
        need(self.hindsight_k >= 0, f"agent.hindsight_k = {self.hindsight_k}; must be >= 0")
        need(self.epsilon_decay_steps >= 0, f"agent.epsilon_decay_steps = {self.epsilon_decay_steps}; must be >= 0")
        # Switches that do not compose.
        if self.noisy:
            need(self.epsilon_start == 0 and self.epsilon_end == 0,
                 f"agent.noisy = true explores through its noise, so epsilon-greedy must be off; got "
                 f"agent.epsilon_start = {self.epsilon_start}, agent.epsilon_end = {self.epsilon_end} (set both to 0)")
        if self.distributional != "none":
            need(self.loss in ("auto",),
                 f"agent.loss = {self.loss!r} with agent.distributional = {self.distributional!r}: distributional heads "
                 "use their own loss (c51: cross-entropy to the projected target; qr, iqn: quantile Huber with "
                 "agent.kappa); set agent.loss = 'auto'")
        if self.hindsight != "none":
            need(self.n_step == 1 and not self.prioritized,
                 f"agent.hindsight = {self.hindsight!r} with agent.n_step = {self.n_step}, agent.prioritized = "
                 f"{str(self.prioritized).lower()}: hindsight relabelling is implemented for uniform 1-step replay only")
        if self.munchausen:
            need(self.distributional == "none",
                 f"agent.munchausen = true with agent.distributional = {self.distributional!r}: only the scalar "
                 "M-DQN is implemented (M-IQN is not)")
            need(not self.double,
                 "agent.munchausen = true with agent.double = true: M-DQN bootstraps from the soft value of the "
                 "target policy, there is no argmax for double Q-learning to decouple")
            need(self.n_step == 1,
                 f"agent.munchausen = true with agent.n_step = {self.n_step}: the Munchausen bonus of the "
                 "intermediate steps needs their log-policies, which the replay does not keep; use n_step = 1")
        return errors

    @property
    def scalar_loss(self) -> str:
        return "huber" if self.loss == "auto" else self.loss

    @property
    def target_period_updates(self) -> int:
        return max(1, round(self.target_period_steps / self.update_period_steps))
