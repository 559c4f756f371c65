"""The DQN family's components against hand-worked examples and naive implementations."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import AgentConfig, DQNAgent, optim
from agents.losses import (
    categorical_projection,
    greedy_bootstrap,
    munchausen_target,
    quantile_huber_loss,
    td_target,
)
from agents.networks import Head, NoisyLinear, dueling_aggregate
from agents.optim import CenteredRMSprop
from agents.replay import FrameReplay, PrioritizedReplay, SumTree
from agents.replay.sumtree import KERNELS


# ------------------------------------------------------------------ categorical projection
def naive_projection(p, r, d, z):
    """Bellemare et al. 2017, Algorithm 1, one atom at a time."""
    v_min, v_max, k = z[0], z[-1], len(z)
    dz = (v_max - v_min) / (k - 1)
    m = np.zeros(k)
    for j in range(k):
        tz = min(max(r + d * z[j], v_min), v_max)
        b = (tz - v_min) / dz
        lo, hi = math.floor(round(b, 9)), math.ceil(round(b, 9))
        if lo == hi:
            m[lo] += p[j]
        else:
            m[lo] += p[j] * (hi - b)
            m[hi] += p[j] * (b - lo)
    return m


def test_projection_hand_worked():
    z = torch.tensor([-1.0, 0.0, 1.0])
    p = torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    # r + d z = [0, 0.5, 1]: 0.2 -> atom 0; 0.3 split evenly between 0 and 1; 0.5 -> atom 1
    # r = 5 (beyond the top): everything on the top atom; discount 0, r = -0.25: all at -0.25
    m = categorical_projection(p, torch.tensor([0.5, 5.0, -0.25]), torch.tensor([0.5, 1.0, 0.0]), z)
    assert torch.allclose(m, torch.tensor([[0.0, 0.35, 0.65], [0.0, 0.0, 1.0], [0.25, 0.75, 0.0]]))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 11),
    st.floats(-20, 20),
    st.floats(0, 1),
    st.floats(-5, -0.1),
    st.floats(0.1, 5),
    st.integers(0, 2**31 - 1),
)
def test_projection_matches_naive_loop(k, reward, discount, v_min, v_max, seed):
    p = np.random.default_rng(seed).dirichlet(np.ones(k))
    z = np.linspace(v_min, v_max, k)
    f64 = dict(dtype=torch.float64)
    got = categorical_projection(torch.tensor(p)[None], torch.tensor([reward], **f64), torch.tensor([discount], **f64),
                                 torch.tensor(z))[0].numpy()
    assert np.allclose(got, naive_projection(p, reward, discount, z), atol=1e-9)
    assert got.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["cross_entropy", "kl"])
def test_c51_priority_is_the_cross_entropy_or_the_kl_to_the_projected_target(kind):
    """Rainbow prioritises by KL(m || p) (Hessel et al. 2018), DQN Zoo and Dopamine by the cross-entropy
    -sum m log p, which is larger by the target's entropy H(m). Checked per sample against Algorithm 1."""
    replay = FrameReplay(100, 1, obs_shape=(3,), stack=1, obs_dtype=torch.float32, seed=0, n_step=1)
    rng = np.random.default_rng(0)
    for i in range(60):  # every 7th transition terminal with reward 0: m on the single atom at 0
        done = i % 7 == 6
        replay.add(rng.normal(size=(1, 3)).astype(np.float32), [rng.integers(2)], [0.0 if done else rng.normal()],
                   [done], [False], rng.normal(size=(1, 3)).astype(np.float32))
    batch = replay.sample(32)
    config = AgentConfig(network="mlp", mlp_hidden=[16], hidden=16, distributional="c51", num_atoms=11, v_min=-5.0,
                         v_max=5.0, prioritized=True, c51_priority=kind)
    agent = DQNAgent(config, (3,), 1, 2, seed=0)
    with torch.no_grad():
        p = agent.online(batch.obs).softmax(-1).double().numpy()  # before the update: what the loss saw
        next_p = agent.target(batch.next_obs).softmax(-1).double().numpy()
    priority = agent.learn(batch)["priority"].double().numpy()
    z = np.linspace(-5.0, 5.0, 11)
    for i in range(32):
        nxt = next_p[i, (next_p[i] @ z).argmax()]
        m = naive_projection(nxt, batch.reward[i].item(), batch.discount[i].item(), z)
        p_taken = p[i, batch.action[i]]
        ce = -(m * np.log(p_taken)).sum()
        kl = sum(mj * math.log(mj / pj) for mj, pj in zip(m, p_taken) if mj > 0)
        assert priority[i] == pytest.approx(ce if kind == "cross_entropy" else kl, rel=1e-4, abs=1e-5)
    assert (priority >= 0).all()


# ------------------------------------------------------------------ targets
def test_double_and_plain_q_bootstrap_against_loops():
    g = torch.Generator().manual_seed(0)
    next_online, next_target = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g)
    reward, discount = torch.randn(16, generator=g), torch.rand(16, generator=g)
    double = td_target(reward, discount, greedy_bootstrap(next_target, next_online))
    plain = td_target(reward, discount, greedy_bootstrap(next_target, next_target))
    for i in range(16):
        a = int(np.argmax(next_online[i].numpy()))
        assert double[i] == pytest.approx(float(reward[i] + discount[i] * next_target[i, a]))
        assert plain[i] == pytest.approx(float(reward[i] + discount[i] * next_target[i].max()))


def test_dueling_aggregation_against_formula():
    value, advantage = torch.randn(8, 1, 3), torch.randn(8, 6, 3)
    q = dueling_aggregate(value, advantage)
    for b in range(8):
        for a in range(6):
            expected = value[b, 0] + advantage[b, a] - advantage[b].mean(0)
            assert torch.allclose(q[b, a], expected, atol=1e-6)
    # The advantages of each state average to zero after aggregation: V is identifiable.
    assert torch.allclose((q - value).mean(1), torch.zeros(8, 3), atol=1e-6)


def test_dueling_head_scales_the_gradient_into_the_torso():
    torch.manual_seed(0)
    x = torch.randn(4, 10, requires_grad=True)
    head = Head(10, 3, hidden=8, dueling=True, grad_scale=0.5)
    head(x).sum().backward()
    scaled = x.grad.clone()
    x.grad = None
    head.grad_scale = 1.0
    head(x).sum().backward()
    assert torch.allclose(scaled, 0.5 * x.grad)


def test_munchausen_target_against_loop():
    g = torch.Generator().manual_seed(1)
    q, next_q = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    action = torch.randint(4, (8,), generator=g)
    reward, discount = torch.randn(8, generator=g), torch.rand(8, generator=g)
    tau, alpha, l0 = 0.03, 0.9, -1.0
    got = munchausen_target(reward, discount, action, q, next_q, tau, alpha, l0)
    for i in range(8):
        log_pi = q[i].double().numpy() / tau - np.logaddexp.reduce(q[i].double().numpy() / tau)
        next_log_pi = next_q[i].double().numpy() / tau - np.logaddexp.reduce(next_q[i].double().numpy() / tau)
        bonus = alpha * min(max(tau * log_pi[action[i]], l0), 0.0)
        soft = sum(np.exp(next_log_pi[a]) * (next_q[i, a].item() - tau * next_log_pi[a]) for a in range(4))
        assert got[i].item() == pytest.approx(reward[i].item() + bonus + discount[i].item() * soft, abs=1e-4)


def naive_quantile_huber(pred, target, taus, kappa):
    total = 0.0
    for i in range(len(pred)):
        row = 0.0
        for j in range(len(target)):
            u = target[j] - pred[i]
            h = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
            h = h / kappa if kappa > 0 else abs(u)
            row += abs(taus[i] - (1.0 if u < 0 else 0.0)) * h
        total += row / len(target)
    return total


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0, 2.0])
def test_quantile_huber_loss_against_loops(kappa):
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 9, generator=g) * 2
    taus = torch.rand(5, 7, generator=g)
    got = quantile_huber_loss(pred, target, taus, kappa)
    for b in range(5):
        expected = naive_quantile_huber(pred[b].tolist(), target[b].tolist(), taus[b].tolist(), kappa)
        assert got[b].item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ noisy nets
def test_noisy_linear_is_deterministic_in_eval_and_resamples_in_training():
    torch.manual_seed(0)
    layer = NoisyLinear(16, 4, sigma0=0.5)
    x = torch.randn(3, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    assert torch.allclose(layer(x), x @ layer.weight_mu.T + layer.bias_mu)
    layer.train()
    assert not torch.allclose(layer(x), layer(x))
    # Initialisation (factorised case): sigma = sigma0 / sqrt(fan_in), mu within +-1/sqrt(fan_in).
    assert torch.allclose(layer.weight_sigma, torch.full_like(layer.weight_sigma, 0.5 / 4))
    assert layer.weight_mu.abs().max() <= 0.25


def test_noisy_linear_noise_is_factorised():
    torch.manual_seed(0)
    layer = NoisyLinear(5, 3, sigma0=1.0)
    with torch.no_grad():
        layer.weight_mu.zero_()
        layer.bias_mu.zero_()
        layer.weight_sigma.fill_(1.0)
        layer.bias_sigma.fill_(1.0)
    out = layer(torch.cat([torch.eye(5), torch.zeros(1, 5)]))  # one forward pass: one draw of noise
    w = (out[:5] - out[5]).T  # the noisy weight matrix, without its bias
    assert torch.linalg.matrix_rank(w) == 1  # f(eps_out) f(eps_in)^T


# ------------------------------------------------------------------ acting
@pytest.mark.parametrize("epsilon", [0.0, 0.25, 0.9, 1.0])
def test_epsilon_greedy_acting(epsilon):
    """Each action is the greedy one with probability 1 - epsilon + epsilon / n (a uniform draw may pick
    it too), and the network runs only for batches in which some action is greedy."""
    from agents.agent import DQNAgent

    n, batch, calls = 4, 3, []
    agent = DQNAgent(AgentConfig(network="mlp", mlp_hidden=[8], hidden=8), (2,), 1, n, seed=0)

    def q_values(obs, network=None):  # action 2 is greedy for every observation
        calls.append(len(obs))
        return torch.eye(n)[2].expand(len(obs), n)

    agent.q_values = q_values
    draws = 4000
    actions = np.stack([agent.act(np.zeros((batch, 2), np.float32), epsilon) for _ in range(draws)])
    greedy = (actions == 2).mean()
    expected = 1 - epsilon + epsilon / n
    assert abs(greedy - expected) < 4 * math.sqrt(expected * (1 - expected) / actions.size) + 1e-9
    if 0 < epsilon < 1:  # every other action uniformly
        others = np.bincount(actions[actions != 2], minlength=n)[[0, 1, 3]]
        assert others.min() > 0.8 * others.mean()
    # The forward pass is skipped exactly when the whole batch explores: about epsilon^batch of the calls.
    skipped = 1 - len(calls) / draws
    assert abs(skipped - epsilon**batch) < 4 * math.sqrt(max(epsilon**batch * (1 - epsilon**batch), 1e-12) / draws) + 1e-9


# ------------------------------------------------------------------ sum tree and prioritized replay
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=300), st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_sumtree_against_numpy_cumsum(kernel, priorities, fanout, seed):
    tree = SumTree(len(priorities), fanout=fanout, kernel=kernel)
    tree.update(torch.arange(len(priorities)), torch.tensor(priorities, dtype=torch.float32))
    cumsum = np.cumsum(priorities, dtype=np.float64)
    assert tree.total().item() == cumsum[-1]
    if cumsum[-1] == 0:
        return
    u = np.random.default_rng(seed).uniform(0, cumsum[-1], 64)
    assert np.array_equal(tree.find(torch.tensor(u)).numpy(), np.searchsorted(cumsum, u, side="right"))


@pytest.mark.parametrize("kernel", KERNELS)
def test_sumtree_last_duplicate_wins_and_updates_propagate(kernel):
    tree = SumTree(100, fanout=4, kernel=kernel)
    tree.update(torch.tensor([3, 3, 7]), torch.tensor([1.0, 5.0, 2.0]))
    assert tree.get(torch.tensor([3, 7])).tolist() == [5.0, 2.0] and tree.total().item() == 7.0
    tree.update(torch.tensor([3]), torch.tensor([0.0]))
    assert tree.total().item() == 2.0 and tree.find(torch.tensor([0.0, 1.99])).tolist() == [7, 7]


def test_sumtree_compiled_kernel_reads_priorities_of_any_layout():
    """Dense float32 tensors are read in place by the compiled loops; strided or other-typed priorities
    (and numpy arrays, lists) go through numpy: every form sets the same leaves, or is refused alike."""
    values = torch.arange(1.0, 13.0)
    forms = {"dense": values.clone(), "strided": torch.stack([values, -values], 1)[:, 0],
             "float64": values.double(), "offset view": torch.cat([torch.zeros(3), values])[3:],
             "numpy": values.numpy(), "list": values.tolist()}
    indices = torch.arange(12) * 7
    leaves = []
    for name, priorities in forms.items():
        tree = SumTree(100, fanout=4, kernel="numba")
        tree.update(indices, priorities)
        leaves.append(tree.leaves.clone())
        assert tree.total().item() == 78.0, name
        with pytest.raises(ValueError, match="11 indices for 12 priorities"):
            tree.update(indices[:11], priorities)
    assert all(torch.equal(leaf, leaves[0]) for leaf in leaves)
    assert torch.equal(leaves[0][indices], values)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 29), st.floats(0, 10, width=32)), min_size=1, max_size=60))
def test_sumtree_update_with_repeats_matches_a_dict(kernel, writes):
    """Repeated indices in one update: the last value of each wins (as writing one by one would)."""
    tree = SumTree(30, fanout=4, kernel=kernel)
    tree.update(torch.tensor([i for i, _ in writes]), torch.tensor([v for _, v in writes]))
    expected = np.zeros(30, np.float32)
    for i, v in writes:
        expected[i] = v
    assert np.array_equal(tree.leaves.numpy(), expected)
    assert tree.total().item() == pytest.approx(float(expected.astype(np.float64).sum()), rel=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_sumtree_sampling_frequencies_chi_square(kernel):
    priorities = torch.arange(1, 11, dtype=torch.float32)
    tree = SumTree(10, fanout=3, kernel=kernel)
    tree.update(torch.arange(10), priorities)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    counts = torch.bincount(tree.find(torch.rand(n, generator=g, dtype=torch.float64) * tree.total()), minlength=10)
    expected = n * priorities / priorities.sum()
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    assert chi2 < 27.88  # chi-square, 9 degrees of freedom, p = 0.001


def test_sumtree_compiled_kernel_refuses_indices_outside_the_capacity():
    """The padding leaves after the capacity must stay 0 (never sampled): the compiled loops refuse to
    write them, and leave the tree as it was."""
    tree = SumTree(10, fanout=4, kernel="numba")  # 12 leaves, the last two padding
    tree.update(torch.tensor([1]), torch.tensor([2.0]))
    for bad in (10, 11, -1):
        with pytest.raises(IndexError, match="capacity"):
            tree.update(torch.tensor([3, bad]), torch.tensor([1.0, 1.0]))
    assert tree.levels[0].tolist() == [0, 2] + [0] * 10 and tree.total().item() == 2.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(2, 40), st.integers(0, 2**31 - 1))
def test_sumtree_compiled_kernel_matches_the_torch_kernel(capacity, fanout, seed):
    """The CPU's compiled loops against the batched torch calls the GPU runs, on the same writes (with
    repeated indices) and prefix sums: the same leaves, inner sums within rounding, the same leaves found."""
    compiled, batched = SumTree(capacity, fanout=fanout, kernel="numba"), SumTree(capacity, fanout=fanout, kernel="torch")
    rng = np.random.default_rng(seed)
    for _ in range(4):
        index = torch.as_tensor(rng.integers(0, capacity, size=rng.integers(1, 80)))
        priority = torch.as_tensor(rng.random(index.numel()) * (rng.random(index.numel()) < 0.8), dtype=torch.float32)
        compiled.update(index, priority)
        batched.update(index, priority)
    assert torch.equal(compiled.levels[0], batched.levels[0])
    assert torch.allclose(compiled.parents, batched.parents, rtol=1e-12, atol=0)
    u = torch.as_tensor(rng.random(256)) * batched.total()
    assert torch.equal(compiled.find(u), batched.find(u))
    if batched.total() > 0:
        strata = torch.as_tensor(rng.random(32))
        (index, probability), (expected_index, expected_probability) = (tree.stratified(strata) for tree in (compiled, batched))
        assert torch.equal(index, expected_index)
        assert torch.allclose(probability, expected_probability, rtol=1e-12, atol=0)


def test_sumtree_update_reads_the_stratified_indices_as_they_are_now():
    """The compiled kernel reuses the array behind the index tensor it returned: an index changed in
    place since, or a new tensor of the same values, updates what it says."""
    tree = SumTree(100, fanout=4, kernel="numba")
    tree.update(torch.arange(100), torch.ones(100))
    index, _ = tree.stratified(np.full(8, 0.5))
    index[0] = 99
    tree.update(index, torch.full((8,), 3.0))
    expected = torch.ones(100)
    expected[index.clone()] = 3.0
    assert torch.equal(tree.leaves, expected) and index[0].item() == 99
    tree.update(index.clone(), torch.full((8,), 5.0))
    expected[index] = 5.0
    assert torch.equal(tree.leaves, expected)


def test_prioritized_replay_resumes_its_strata_draws():
    """The compiled kernel's uniform draws (numpy's generator) are part of the replay's state."""
    replay = PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, seed=3)
    replay.uniform(5)
    state = replay.state_dict()
    expected = replay.uniform(32)
    other = PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, seed=4)
    other.load_state_dict(state)
    assert np.array_equal(other.uniform(32), expected)


def test_prioritized_strata_draws_in_blocks_are_numpys_stream_and_resume_mid_block():
    """The compiled kernel draws its uniforms a block at a time: the numbers are those of one numpy call per
    batch, and a checkpoint taken partway through a block holds the generator as those calls leave it."""
    from agents.replay.prioritized import UNIFORM_BLOCK

    replay = PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, seed=3)
    reference = np.random.default_rng(replay.generator.initial_seed())
    sizes = [5, 32, UNIFORM_BLOCK - 40, 32, UNIFORM_BLOCK + 7, 32]  # past a block's end, and longer than one
    for size in sizes:
        assert np.array_equal(replay.uniform(size), reference.random(size))
        assert replay.state_dict()["host_generator"] == reference.bit_generator.state
    other = PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, seed=4)
    other.load_state_dict(replay.state_dict())
    expected = reference.random(32)
    assert np.array_equal(other.uniform(32), expected) and np.array_equal(replay.uniform(32), expected)


def test_sumtree_checkpoint_moves_between_kernels():
    """A GPU run's tree (torch kernel, its fanout) resumed on a CPU (compiled kernel, another fanout): the
    inner sums are rebuilt from the leaves."""
    batched, compiled = SumTree(5000, kernel="torch"), SumTree(5000, kernel="numba")
    assert batched.fanout != compiled.fanout
    batched.update(torch.arange(0, 5000, 3), torch.rand(1667))
    compiled.load_state_dict(batched.state_dict())
    assert torch.equal(compiled.leaves, batched.leaves)
    assert compiled.total().item() == pytest.approx(batched.total().item(), rel=1e-12)
    u = torch.rand(500, dtype=torch.float64) * batched.total()
    assert torch.equal(compiled.find(u), batched.find(u))


def filled_prioritized(alpha=0.6, beta=0.4):
    replay = PrioritizedReplay(64, 1, obs_shape=(1,), stack=1, obs_dtype=torch.float32, seed=0,
                               alpha=alpha, beta=beta, beta_steps=100)
    for i in range(20):
        replay.add([[i]], [0], [0.0], [False], [False], [[i + 1]])
    assert len(replay) == 20  # brings the tree up to date
    return replay


def test_prioritized_weights_against_the_formula():
    replay = filled_prioritized()
    valid = torch.nonzero(replay.tree.leaves > 0).squeeze(1)
    td = torch.linspace(0.1, 3.0, len(valid))
    replay.update_priorities(valid, td)
    leaves = (td + replay.eps) ** replay.alpha
    assert torch.allclose(replay.tree.get(valid), leaves)
    batch = replay.sample(16)
    p = replay.tree.get(batch.index) / leaves.sum()
    beta = replay.beta()
    assert beta == pytest.approx(0.4 + 0.6 * 20 / 100)
    w = (len(valid) * p) ** -beta
    assert torch.allclose(batch.weight, (w / w.max()).float(), atol=1e-6)


def test_prioritized_new_transitions_enter_at_the_maximum():
    replay = filled_prioritized()
    valid = torch.nonzero(replay.tree.leaves > 0).squeeze(1)
    replay.update_priorities(valid, torch.full((len(valid),), 0.5))
    replay.update_priorities(valid[:1], torch.tensor([4.0]))
    replay.add([[20]], [0], [0.0], [False], [False], [[21]])
    replay.add([[21]], [0], [0.0], [False], [False], [[22]])
    replay._refresh()
    top = (4.0 + replay.eps) ** replay.alpha
    newest = replay.tree.get(torch.tensor([20]))
    assert newest.item() == pytest.approx(top, rel=1e-6)


@pytest.mark.parametrize("alpha, beta", [(1.5, 0.4), (0.5, -0.1)])
def test_prioritized_bad_exponents(alpha, beta):
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        filled_prioritized(alpha, beta)


# ------------------------------------------------------------------ optimizer and config
@pytest.mark.parametrize("initial_square", [0.0, 1.0])
def test_centered_rmsprop_against_the_formula(initial_square):
    """Two parameters updated together (multi-tensor ops); the second has no gradient at first. The mean
    square starts at 0 (DeepMind's, PyTorch's) or 1 (TensorFlow 1's RMSPropOptimizer, Dopamine's DQN)."""
    w, v = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([[0.5], [3.0]]))
    opt = CenteredRMSprop([w, v], lr=0.1, decay=0.9, eps=0.01, initial_square=initial_square)
    expected = {"w": np.array([1.0, -2.0]), "v": np.array([[0.5], [3.0]])}
    averages = {name: (np.zeros_like(x), np.full_like(x, initial_square)) for name, x in expected.items()}
    for step, grad in enumerate(([0.5, 1.0], [-0.2, 0.3], [0.1, -0.4])):
        grads = {"w": np.array(grad), "v": None if step == 0 else np.array([[grad[0]], [2 * grad[1]]])}
        w.grad = torch.tensor(grads["w"], dtype=torch.float32)
        v.grad = None if grads["v"] is None else torch.tensor(grads["v"], dtype=torch.float32)
        opt.step()
        for name, g in grads.items():
            if g is None:
                continue
            g_avg, sq_avg = averages[name]
            g_avg, sq_avg = 0.9 * g_avg + 0.1 * g, 0.9 * sq_avg + 0.1 * g**2
            averages[name] = g_avg, sq_avg
            expected[name] = expected[name] - 0.1 * g / np.sqrt(sq_avg - g_avg**2 + 0.01)
        assert np.allclose(w.detach().numpy(), expected["w"], atol=1e-6)
        assert np.allclose(v.detach().numpy(), expected["v"], atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_centered_rmsprop_cpu_loop_matches_the_multi_tensor_path(monkeypatch, channels_last):
    """The CPU's compiled loop (one pass per tensor) against the multi-tensor ops the GPU runs, over steps
    whose gradients grow and change sign: equal up to float32 rounding, in either memory layout."""
    def run(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        params = [torch.nn.Parameter(torch.randn(64, 32, 4, 4).contiguous(memory_format=layout)),
                  torch.nn.Parameter(torch.randn(1000))]
        opt = CenteredRMSprop(params, lr=2.5e-4)
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(optim, "_flat_cpu_float32", lambda *tensors: False)
            for k in range(20):
                for p in params:
                    p.grad = torch.randn_like(p) * (k + 1)  # laid out as p
                    assert not fused or optim._flat_cpu_float32(p, p.grad)  # the compiled loop's case
                opt.step()
        return [p.detach() for p in params]

    torch.manual_seed(0)
    initial = [torch.randn(64, 32, 4, 4), torch.randn(1000)]
    for fused, multi_tensor, start in zip(run(True), run(False), initial):
        torch.testing.assert_close(fused, multi_tensor, rtol=1e-6, atol=1e-6)
        assert (fused - start).abs().max() > 1e-3  # 20 steps of about lr each


def test_centered_rmsprop_loads_a_state_saved_before_the_pytorch_form():
    """An optimizer state without eps_in_root and momentum (checkpoints written before they existed)
    continues as DeepMind's form."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(10)) for _ in range(2)]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    old, new = CenteredRMSprop(params, lr=0.01), CenteredRMSprop(copies, lr=0.01)
    for p, c in zip(params, copies):
        p.grad = torch.randn(10)
        c.grad = p.grad.clone()
    old.step()
    saved = copy.deepcopy(old.state_dict())  # as a checkpoint holds it, not sharing the live state
    for group in saved["param_groups"]:
        del group["eps_in_root"], group["momentum"]
    new.load_state_dict(saved)
    for c, p in zip(copies, params):
        c.data.copy_(p.data)
    old.step()
    new.step()
    for p, c in zip(params, copies):
        torch.testing.assert_close(c, p, rtol=0, atol=0)


def test_centered_rmsprop_cpu_loop_follows_replaced_state_and_storage():
    """The compiled loop's views are kept from step to step: after a loaded state (new state tensors) and
    a parameter given new storage, the steps must be those of an optimizer that never kept any."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 4, 3, 3)), torch.nn.Parameter(torch.randn(128))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    kept, fresh = CenteredRMSprop(params, lr=0.01), CenteredRMSprop(copies, lr=0.01)
    grads = [[torch.randn_like(p) for p in params] for _ in range(5)]
    for step in range(3):  # the views made and used
        for p, grad in zip(params, grads[step]):
            p.grad = grad.clone()
        kept.step()
    for step in range(3, 5):  # another history, which the kept optimizer then loads
        for c, grad in zip(copies, grads[step]):
            c.grad = grad.clone()
        fresh.step()
    kept.load_state_dict(copy.deepcopy(fresh.state_dict()))
    for p, c in zip(params, copies):
        p.data.copy_(c.data)  # same storage
    for step in range(5, 7):
        if step == 6:
            params[0].data = params[0].detach().clone()  # new storage, same values
        for p, c in zip(params, copies):
            p.grad = torch.randn_like(p)
            c.grad = p.grad.clone()
        kept.step()
        fresh.step()
        for p, c in zip(params, copies):
            torch.testing.assert_close(p, c, rtol=0, atol=0)


def test_rmsprop_continues_from_torchs_rmsprop_state():
    """`rmsprop` runs checkpointed torch.optim.RMSprop's state before it ran on CenteredRMSprop: loaded,
    the next steps are torch's."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(3, 4))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    reference = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=0.01, momentum=0.5, centered=True)
    for step in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        if step == 1:
            ours = optim.build_optimizer(copies, "rmsprop", lr=0.01, eps=0.01, rmsprop_decay=0.9, rmsprop_momentum=0.5)
            ours.load_state_dict(copy.deepcopy(reference.state_dict()))
            for c, p in zip(copies, params):
                c.data.copy_(p.data)
        if step >= 1:
            for c, p in zip(copies, params):
                c.grad = p.grad.clone()
            ours.step()
        reference.step()
    for c, p in zip(copies, params):
        torch.testing.assert_close(c, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("compiled_loop", [True, False])
def test_rmsprop_eps_outside_the_root_is_torchs_centered_rmsprop(monkeypatch, momentum, compiled_loop):
    """The `rmsprop` optimizer against torch.optim.RMSprop(centered=True), which MinAtar's reference code
    runs, on both of its paths, with and without momentum."""
    torch.manual_seed(0)
    shapes = [(16, 4, 3, 3), (128, 1024), (6,)]
    initial = [torch.randn(shape) for shape in shapes]
    ours = [torch.nn.Parameter(x.clone()) for x in initial]
    reference = [torch.nn.Parameter(x.clone()) for x in initial]
    opt = optim.build_optimizer(ours, "rmsprop", lr=1e-3, eps=0.01, rmsprop_decay=0.95, rmsprop_momentum=momentum)
    ref = torch.optim.RMSprop(reference, lr=1e-3, alpha=0.95, eps=0.01, momentum=momentum, centered=True)
    if not compiled_loop:
        monkeypatch.setattr(optim, "_flat_cpu_float32", lambda *tensors: False)
    for k in range(20):
        for a, r in zip(ours, reference):
            a.grad = torch.randn_like(a) * (k + 1) * 0.01
            r.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, r, x in zip(ours, reference, initial):
        torch.testing.assert_close(a.detach(), r.detach(), rtol=1e-5, atol=1e-6)
        assert (a.detach() - x).abs().max() > 1e-2  # 20 steps of lr / sqrt(1 - decay) or more each


@pytest.mark.parametrize(
    "switches, message",
    [
        (dict(noisy=True), "epsilon-greedy must be off"),
        (dict(num_atoms=1), "num_atoms = 1; must be >= 2"),
        (dict(v_min=1.0, v_max=1.0), "v_min = 1.0 must be < agent.v_max"),
        (dict(priority_alpha=1.2), "priority_alpha = 1.2; must be in [0, 1]"),
        (dict(priority_beta=-1.0), "priority_beta = -1.0; must be in [0, 1]"),
        (dict(n_step=0), "n_step = 0; must be >= 1"),
        (dict(distributional="c51", loss="mse"), "distributional heads use their own loss"),
        (dict(munchausen=True, distributional="iqn"), "M-IQN is not"),
        (dict(munchausen=True, double=True), "no argmax for double"),
        (dict(munchausen=True, n_step=3), "use n_step = 1"),
        (dict(distributional="c52"), "allowed: none, c51, qr, iqn"),
    ],
)
def test_switches_that_do_not_compose_are_refused(switches, message):
    errors = AgentConfig(**switches).validate()
    assert any(message in e for e in errors), errors


def test_prioritized_replay_draws_the_same_batches_on_either_tree_kernel():
    """A whole prioritized stream (adds with episode ends, samples, priority updates) on the CPU's compiled
    tree and on the GPU's torch tree, run on this CPU: the same transitions and weights at every step."""
    def stream(kernel):
        replay = PrioritizedReplay(1_000, 2, obs_shape=(4,), stack=4, n_step=5, seed=0, alpha=0.5, beta=0.4,
                                   beta_steps=800)
        replay.tree = SumTree(replay.capacity, "cpu", kernel=kernel)
        rng, g = np.random.default_rng(0), torch.Generator().manual_seed(1)
        obs = np.zeros((2, 4, 4), np.uint8)
        obs[:, -1] = 1
        batches = []
        for t in range(800):
            nxt = np.concatenate([obs[:, 1:], rng.integers(1, 255, (2, 1, 4), dtype=np.uint8)], 1)
            terminated = rng.random(2) < 0.02
            replay.add(obs, rng.integers(4, size=2), rng.normal(size=2), terminated, np.zeros(2, bool), nxt)
            obs = nxt.copy()
            obs[terminated, :-1] = 0
            if t >= 50:
                batch = replay.sample(32)
                batches.append((batch.index, batch.weight))
                replay.update_priorities(batch.index, torch.rand(32, generator=g) * 5)
        return batches

    for (index, weight), (expected_index, expected_weight) in zip(stream("numba"), stream("torch"), strict=True):
        assert torch.equal(index, expected_index)
        assert torch.allclose(weight, expected_weight, rtol=1e-6, atol=0)
