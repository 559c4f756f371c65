import dataclasses

import numpy as np
import pytest

from wrappers.games import UnknownGameError, canonical_game
from wrappers.protocols import MACHADO, NATURE, get_protocol
from wrappers.vector import finished_episodes, make_env, make_vector_env, next_observations


@pytest.mark.parametrize("name", ["Pong", "pong", "SpaceInvaders", "space_invaders", "ALE/Pong-v5", "MsPacman"])
def test_game_spellings(name):
    assert canonical_game(name) in {"pong", "space_invaders", "ms_pacman"}


def test_unknown_game_suggests_close_names():
    with pytest.raises(UnknownGameError, match="Did you mean: .*breakout"):
        canonical_game("breakot")


def test_unknown_protocol():
    with pytest.raises(ValueError, match="known protocols: nature, machado"):
        get_protocol("natur")


@pytest.mark.parametrize("protocol, actions", [("nature", 6), ("machado", 18)])
def test_vector_shapes_and_action_sets(protocol, actions):
    envs = make_vector_env("Pong", protocol, 2, seed=0)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_action_space.n == actions
    # The first observation of an episode has zeros before its newest frame.
    assert not obs[:, :3].any() and obs[:, 3].any()
    obs, reward, terminated, truncated, _ = envs.step(np.zeros(2, dtype=np.int64))
    assert obs.shape == (2, 4, 84, 84) and reward.shape == (2,)
    envs.close()


def play(env, steps, rng, until=None):
    """Random play; returns the per-step (reward, terminated, truncated, info) until `until` holds."""
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(rng.integers(env.action_space.n))
        out.append((reward, terminated, truncated, info, obs))
        if until and until(out[-1]):
            break
    return out


def test_learning_rewards_are_clipped_and_the_recorded_score_is_not():
    # Space Invaders' aliens are worth 5 to 30 points: the score is far above the clipped sum.
    rng = np.random.default_rng(0)
    train = make_env("space_invaders", NATURE)
    train.reset(seed=3)
    steps = play(train, 20_000, rng, until=lambda s: "episode" in s[3])
    rewards = np.array([s[0] for s in steps])
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    score = steps[-1][3]["episode"]["r"]
    assert score >= 5 * (rewards > 0).sum() and score % 5 == 0
    # Evaluation environments see the raw reward.
    evaluation = make_env("space_invaders", NATURE, evaluation=True)
    evaluation.reset(seed=3)
    raw = [s[0] for s in play(evaluation, 20_000, np.random.default_rng(0), until=lambda s: s[0] > 1)]
    assert max(raw) > 1


def test_life_loss_is_a_learning_terminal_but_the_game_goes_on():
    rng = np.random.default_rng(1)
    env = make_env("breakout", NATURE)
    env.reset(seed=1)
    ale = env.unwrapped.ale
    lives = ale.lives()
    first_life = play(env, 10_000, rng, until=lambda s: s[1])
    reward, terminated, truncated, info, _ = first_life[-1]
    assert terminated and info["life_loss"] and "episode" not in info
    assert ale.lives() == lives - 1 and not ale.game_over()
    frame = ale.getEpisodeFrameNumber()
    obs, _ = env.reset()
    assert ale.getEpisodeFrameNumber() >= frame  # the game was not reset ...
    assert not obs[:3].any()  # ... but the learning episode's stack starts afresh
    rest, games = [], []
    while not games:
        step = play(env, 10_000, rng, until=lambda s: s[1] or s[2])
        rest += step
        if "episode" in step[-1][3]:
            games.append(step[-1][3]["episode"])
        else:
            env.reset()
    # The recorded game spans all five lives.
    assert games[0]["l"] > len(first_life) and ale.game_over()


def test_evaluation_env_has_no_life_loss_terminal():
    env = make_env("breakout", NATURE, evaluation=True)
    env.reset(seed=1)
    steps = play(env, 20_000, np.random.default_rng(1), until=lambda s: s[1] or s[2])
    assert "episode" in steps[-1][3] and env.unwrapped.ale.game_over()


def test_a_new_life_starts_the_same_way_in_training_and_evaluation():
    """FIRE launches each life of Breakout in both kinds of environment, so that a policy that never
    presses FIRE plays the same game in evaluation as in training (and evaluation does not wait for
    FIRE until its frame cap). Same seed, same actions: the same game, frame for frame."""
    actions = np.random.default_rng(2).choice([0, 2, 3], size=5_000)  # NOOP, RIGHT, LEFT: never FIRE

    def whole_game(evaluation):
        env = make_env("breakout", NATURE, evaluation=evaluation)
        env.reset(seed=4)
        for action in actions:
            _, _, terminated, truncated, info = env.step(action)
            if "episode" in info:
                ale = env.unwrapped.ale
                return info["episode"], ale.game_over(with_truncation=False), ale.getEpisodeFrameNumber()
            if terminated or truncated:  # a lost life ends a learning episode only
                env.reset()
        raise AssertionError("the game did not end")

    (train_game, train_over, train_frames), (eval_game, eval_over, eval_frames) = whole_game(False), whole_game(True)
    assert train_over and eval_over  # all five lives lost, not cut off at a frame cap
    assert eval_frames == train_frames < NATURE.eval_max_episode_frames
    assert eval_game["r"] == train_game["r"] and eval_game["l"] == train_game["l"]


def frames_after(protocol, seed, actions):
    env = make_env("pong", protocol, evaluation=True)
    env.reset(seed=seed)
    return np.stack([env.step(a)[0][-1] for a in actions])


def test_sticky_actions_under_machado():
    assert make_env("pong", MACHADO).unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    actions = np.random.default_rng(0).integers(0, 18, 300)
    # Without no-op starts or stickiness, Pong is deterministic: the seed changes nothing ...
    not_sticky = dataclasses.replace(MACHADO, repeat_action_probability=0.0)
    assert np.array_equal(frames_after(not_sticky, 0, actions), frames_after(not_sticky, 1, actions))
    # ... with sticky actions the same actions play out differently under another seed, reproducibly.
    assert not np.array_equal(frames_after(MACHADO, 0, actions), frames_after(MACHADO, 1, actions))
    assert np.array_equal(frames_after(MACHADO, 0, actions), frames_after(MACHADO, 0, actions))


def test_protocol_cards_cap_episodes_at_108k_frames():
    assert NATURE.max_episode_frames == MACHADO.max_episode_frames == 108_000


def test_truncation_at_the_frame_cap():
    short = dataclasses.replace(NATURE, max_episode_frames=400)
    env = make_env("pong", short)
    env.reset(seed=0)
    steps = play(env, 1000, np.random.default_rng(0), until=lambda s: s[1] or s[2])
    reward, terminated, truncated, info, _ = steps[-1]
    assert truncated and not terminated
    assert env.unwrapped.ale.getEpisodeFrameNumber() == 400
    assert "episode" in info  # a truncated game is still recorded


def test_vector_env_gives_final_observation_and_whole_game_scores():
    short = dataclasses.replace(NATURE, max_episode_frames=400)
    envs = make_vector_env("pong", short, 2, seed=0)
    obs, _ = envs.reset(seed=0)
    for _ in range(200):
        nxt, reward, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
        if (terminated | truncated).any():
            break
    ended = np.flatnonzero(terminated | truncated)
    final = next_observations(nxt, info)
    for i in ended:
        assert not nxt[i, :3].any()  # the next episode's first observation
        assert final[i, :3].any()  # the finished episode's last one
    assert {e.env for e in finished_episodes(info)} == set(ended)
    envs.close()
