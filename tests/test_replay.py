import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.replay.frame import FrameReplay, ReplayTooLargeError
from agents.replay.sumtree import KERNELS
from tests.naive_replay import NaiveReplay


class FakeEnvs:
    """N environments whose frames are unique integers, stacked with zero padding like the protocols."""

    def __init__(self, num_envs: int, stack: int, shape=(2,)):
        self.n, self.stack, self.shape = num_envs, stack, shape
        self.next_id = 1
        self.history = [self._new_frame_list() for _ in range(num_envs)]

    def _frame(self):
        f = np.full(self.shape, self.next_id, dtype=np.int64)
        self.next_id += 1
        return f

    def _new_frame_list(self):
        return [self._frame()]

    def _stack(self, frames):
        pad = [np.zeros(self.shape, np.int64)] * max(0, self.stack - len(frames))
        return np.stack(pad + frames[-self.stack :])

    def obs(self):
        return np.stack([self._stack(h) for h in self.history])

    def step(self, done):
        """Advances every env by one frame; returns next_obs (final obs where done), then resets those."""
        for h in self.history:
            h.append(self._frame())
        next_obs = self.obs()
        for e in np.flatnonzero(done):
            self.history[e] = self._new_frame_list()
        return next_obs


def key(obs, action, reward, discount, next_obs):
    return (np.asarray(obs).tobytes(), int(action), round(float(reward), 4), round(float(discount), 4),
            np.asarray(next_obs).tobytes())


def run_stream(num_envs, stack, n_step, slots, events, gamma=0.9, compress="none", kernel=None, after_add=None):
    envs = FakeEnvs(num_envs, stack)
    replay = FrameReplay(slots * num_envs, num_envs, obs_shape=(2,), stack=stack, n_step=n_step,
                         gamma=gamma, obs_dtype=torch.int64, seed=0, compress=compress, kernel=kernel)
    naive = NaiveReplay(slots * num_envs, num_envs, stack, n_step, gamma)
    rng = np.random.default_rng(len(events))
    for kind in events:
        terminated = np.array([k == 1 for k in kind])
        truncated = np.array([k == 2 for k in kind])
        obs = envs.obs()
        action = rng.integers(0, 6, num_envs)
        reward = rng.integers(-2, 3, num_envs).astype(np.float32)
        next_obs = envs.step(terminated | truncated)
        replay.add(obs, action, reward, terminated, truncated, next_obs)
        naive.add(obs, action, reward, terminated, truncated, next_obs)
        if after_add is not None:
            after_add(replay, naive)
    return replay, naive


streams = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(1, 4),  # stack
        st.integers(1, 5),  # n_step
        st.integers(0, 12),  # extra slots beyond the minimum
        st.lists(st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n), min_size=1, max_size=60),
    )
)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams)
def test_replay_matches_naive_reference(kernel, stream):
    num_envs, stack, n_step, extra, events = stream
    slots = stack + n_step + 1 + extra
    replay, naive = run_stream(num_envs, stack, n_step, slots, events, kernel=kernel)
    expected = {key(*t) for t in naive.available()}
    assert len(replay) == len(naive.available())
    if not expected:
        return
    seen = set()
    for _ in range(60):
        b = replay.sample(64)
        for i in range(64):
            k = key(b.obs[i], b.action[i], b.reward[i], b.discount[i], b.next_obs[i])
            assert k in expected, "sampled a transition the reference does not hold"
            seen.add(k)
        if seen == expected:
            break
    assert seen == expected, f"{len(expected - seen)} available transitions never sampled"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.floats(0.0, 1.0))
def test_compiled_gather_gives_the_torch_kernels_batch(stream, gamma):
    """Every slot of a random stream gathered by both kernels: the same stacks, actions and discounts,
    and returns equal to float32 rounding (a sum of n products, which torch may add in another order)."""
    num_envs, stack, n_step, extra, events = stream
    slots = stack + n_step + 1 + extra
    compiled, _ = run_stream(num_envs, stack, n_step, slots, events, gamma=gamma, kernel="numba")
    batched, _ = run_stream(num_envs, stack, n_step, slots, events, gamma=gamma, kernel="torch")
    assert torch.equal(compiled.tree.leaves, batched.tree.leaves)
    every, valid = torch.arange(compiled.capacity), torch.nonzero(compiled.tree.leaves > 0).flatten()
    # The returns' arithmetic agrees on any slot; frames are compared where they were written.
    for index, names in ((every, ("action", "discount", "index")), (valid, ("obs", "next_obs"))):
        a, b = compiled._gather(index), batched._gather(index)
        for name in names:
            assert getattr(a, name).dtype == getattr(b, name).dtype, name
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        torch.testing.assert_close(a.reward, b.reward)


def test_replay_kernel_bad_input():
    with pytest.raises(ValueError, match="replay kernel 'jax'"):
        FrameReplay(100, 1, kernel="jax")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_once_sampleable_always_sampleable(stream):
    """FrameReplay checks the tree's total only until it first holds a transition (reading it back
    stalls a GPU): the naive reference never becomes empty again after that."""
    num_envs, stack, n_step, extra, events = stream
    slots = stack + n_step + 1 + extra
    sampleable = False
    for end in range(1, len(events) + 1):
        replay, naive = run_stream(num_envs, stack, n_step, slots, events[:end])
        available = len(naive.available()) > 0
        assert available or not sampleable, f"empty again after {end} steps"
        assert len(replay) == len(naive.available())
        sampleable |= available


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_tree_refreshed_after_every_add_holds_the_naive_references_transitions(stream):
    """The tree is brought up to date a few slots at a time (those an add can have changed): refreshed
    after every add, it must hold as many sampleable transitions as the naive reference at every step,
    and at the end the same leaves as a replay refreshed once, over every slot."""
    num_envs, stack, n_step, extra, events = stream
    slots = stack + n_step + 1 + extra

    def same_count(replay, naive):
        assert len(replay) == len(naive.available())

    replay, _ = run_stream(num_envs, stack, n_step, slots, events, after_add=same_count)
    once, naive = run_stream(num_envs, stack, n_step, slots, events)
    assert len(once) == len(naive.available())  # refreshes it
    assert (replay.tree.leaves > 0).equal(once.tree.leaves > 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.sampled_from(["lz4", "zstd"]))
def test_compressed_replay_samples_what_the_uncompressed_one_does(stream, codec):
    num_envs, stack, n_step, extra, events = stream
    slots = stack + n_step + 1 + extra
    plain, _ = run_stream(num_envs, stack, n_step, slots, events)
    packed, _ = run_stream(num_envs, stack, n_step, slots, events, compress=codec)
    if len(plain) == 0:
        return
    for _ in range(3):
        a, b = plain.sample(32), packed.sample(32)
        for name in ("obs", "action", "reward", "discount", "next_obs", "index"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    # A checkpoint's frames round-trip through the compressed store.
    ranges, frames = packed.frames_since(np.full(num_envs, -1))
    assert torch.equal(frames, plain.frames_since(np.full(num_envs, -1))[1])
    packed.write_frames(ranges, frames)
    assert torch.equal(plain.sample(32).obs, packed.sample(32).obs)


def test_compressed_replay_bad_input():
    with pytest.raises(ValueError, match="replay compression 'gzip'"):
        FrameReplay(100, 1, obs_shape=(2,), stack=1, compress="gzip")


def test_hand_worked_three_step_return():
    # One env, stack 2, n = 3, gamma 0.5: rewards 1, 2, 4 then termination after the 4th step.
    envs = FakeEnvs(1, 2)
    replay = FrameReplay(40, 1, obs_shape=(2,), stack=2, n_step=3, gamma=0.5, obs_dtype=torch.int64, seed=0)
    rewards = [1.0, 2.0, 4.0, 8.0]
    for i, r in enumerate(rewards):
        done = np.array([i == 3])
        obs = envs.obs()
        replay.add(obs, [i], [r], done, [False], envs.step(done))
    batch = replay._gather(torch.tensor([0, 1, 3]))  # slots of steps 0, 1, 3 (one env: slot = step)
    # step 0: 1 + 0.5*2 + 0.25*4 = 3, bootstraps from step 3's observation with 0.5^3
    # step 1: 2 + 0.5*4 + 0.25*8 = 6, terminated within the window: discount 0
    # step 3: 8, terminated: discount 0
    assert batch.reward.tolist() == [3.0, 6.0, 8.0]
    assert batch.discount.tolist() == [0.125, 0.0, 0.0]
    assert batch.obs[0].tolist() == [[0, 0], [1, 1]]  # zero before the episode's first frame
    assert batch.next_obs[0].tolist() == [[3, 3], [4, 4]]
    assert batch.next_obs[2].tolist() == [[4, 4], [5, 5]]  # the final observation


def test_truncation_bootstraps_from_final_observation():
    envs = FakeEnvs(1, 1)
    replay = FrameReplay(20, 1, obs_shape=(2,), stack=1, n_step=2, gamma=0.5, obs_dtype=torch.int64, seed=0)
    for i in range(3):
        done = np.array([i == 1])
        obs = envs.obs()
        replay.add(obs, [0], [1.0], [False], done, envs.step(done))
    batch = replay._gather(torch.tensor([0]))
    assert batch.reward.item() == 1.5 and batch.discount.item() == 0.25
    assert batch.next_obs[0].tolist() == [[3, 3]]  # final observation of the truncated episode


def test_vector_observations_float32():
    replay = FrameReplay(100, 2, obs_shape=(4,), stack=1, obs_dtype=torch.float32, seed=0)
    obs = np.random.rand(2, 4).astype(np.float32)
    for _ in range(5):
        nxt = np.random.rand(2, 4).astype(np.float32)
        replay.add(obs, [0, 1], [1.0, 0.0], [False, False], [False, False], nxt)
        obs = nxt
    b = replay.sample(8)
    assert b.obs.shape == (8, 1, 4) and b.obs.dtype == torch.float32


def test_rejects_non_zero_padding():
    replay = FrameReplay(100, 1, obs_shape=(2,), stack=2, obs_dtype=torch.int64)
    obs = np.ones((1, 2, 2), np.int64)
    with pytest.raises(ValueError, match="zero"):
        replay.add(obs, [0], [0.0], [False], [False], obs)


def test_sampling_before_any_transition_is_an_error():
    replay = FrameReplay(100, 1, obs_shape=(2,), stack=1, obs_dtype=torch.int64)
    with pytest.raises(RuntimeError, match="no complete transition"):
        replay.sample(4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(capacity=4, num_envs=1), "capacity 4"),
        (dict(capacity=100, num_envs=0), "num_envs"),
        (dict(capacity=100, num_envs=1, n_step=0), "n_step"),
        (dict(capacity=100, num_envs=1, gamma=1.5), "gamma"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrameReplay(**kwargs)


def test_refuses_replay_larger_than_memory():
    with pytest.raises(ReplayTooLargeError, match="GiB"):
        FrameReplay(10**12, 1)


def test_bytes_per_transition_is_frame_plus_small_metadata():
    replay = FrameReplay(100_000, 1)
    assert replay.nbytes() / replay.capacity < 84 * 84 + 20


def test_cut_episodes_truncates_and_bootstraps_from_the_stored_next_frame():
    envs = FakeEnvs(2, 2)
    replay = FrameReplay(60, 2, obs_shape=(2,), stack=2, n_step=3, gamma=0.5, obs_dtype=torch.int64, seed=0)
    for _ in range(2):
        obs = envs.obs()
        replay.add(obs, [0, 0], [1.0, 1.0], [False, False], [False, False], envs.step(np.array([False, False])))
    assert len(replay) == 0  # neither 3-step window is complete
    replay.cut_episodes()
    assert len(replay) == 4  # both steps of both envs, their windows now end at the cut
    batch = replay._gather(torch.tensor([0]))  # env 0, first step
    assert batch.reward.item() == 1.5 and batch.discount.item() == 0.25  # truncated: bootstraps
    assert batch.next_obs[0].tolist() == [[3, 3], [5, 5]]
    # The next add starts new episodes: the first observation has zeros before its newest frame.
    envs.history = [envs._new_frame_list() for _ in range(2)]
    replay.add(envs.obs(), [0, 0], [0.0, 0.0], [False, False], [False, False], envs.step(np.array([False, False])))
