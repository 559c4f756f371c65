"""Protocol cards: the environment settings a paper's numbers were produced under, as data.

A card is printed by `reproduce show` and written into every run's config, so a score can always be
traced to the exact environment it came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    citation: str
    # Emulator
    repeat_action_probability: float  # sticky actions: chance the previous action repeats, per frame
    full_action_space: bool  # all 18 actions, or the game's minimal set
    max_episode_frames: int  # episode truncated after this many emulator frames (108,000 = 30 minutes)
    # Preprocessing
    noop_max: int  # at reset, a uniform number of no-op actions in [1, noop_max]; 0: none
    fire_on_reset: bool  # press FIRE after a reset in games whose action set has it
    frame_skip: int  # emulator frames per agent step (the max over the last two is observed)
    screen_size: int  # grayscale frames resized to screen_size x screen_size
    frame_stack: int  # observations stack this many frames; frames before an episode's start are 0
    # Learning signal (evaluation always sees the raw reward and whole games)
    clip_rewards: bool  # learning reward clipped to [-1, 1]; recorded scores stay unclipped
    terminal_on_life_loss: bool  # a lost life ends the learning episode; the game goes on
    # Evaluation
    eval_epsilon: float  # epsilon-greedy exploration while evaluating
    eval_max_episode_frames: int  # evaluation episodes are truncated after this many frames

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


NATURE = Protocol(
    name="nature",
    citation="Mnih et al. 2015, Human-level control through deep reinforcement learning, Nature 518",
    repeat_action_probability=0.0,
    full_action_space=False,
    max_episode_frames=108_000,
    noop_max=30,
    fire_on_reset=True,
    frame_skip=4,
    screen_size=84,
    frame_stack=4,
    clip_rewards=True,
    terminal_on_life_loss=True,
    eval_epsilon=0.05,
    # Evaluation episodes of at most 5 minutes of play (18,000 frames at 60 Hz), Methods section.
    eval_max_episode_frames=18_000,
)

MACHADO = Protocol(
    name="machado",
    citation=(
        "Machado et al. 2018, Revisiting the Arcade Learning Environment: Evaluation Protocols and "
        "Open Problems for General Agents, JAIR 61 (arXiv:1709.06009)"
    ),
    repeat_action_probability=0.25,
    full_action_space=True,
    max_episode_frames=108_000,
    noop_max=0,
    fire_on_reset=False,
    frame_skip=4,
    screen_size=84,
    frame_stack=4,
    clip_rewards=True,
    terminal_on_life_loss=False,
    # Dopamine's evaluation epsilon for its sticky-action baselines.
    eval_epsilon=0.001,
    eval_max_episode_frames=108_000,
)

# Classic-control check tier (CartPole): the environment as gymnasium defines it, no preprocessing.
CLASSIC = Protocol(
    name="classic",
    citation="gymnasium classic control, default settings (CartPole-v1: 500-step time limit)",
    repeat_action_probability=0.0,
    full_action_space=False,
    max_episode_frames=0,  # gymnasium's own TimeLimit applies
    noop_max=0,
    fire_on_reset=False,
    frame_skip=1,
    screen_size=0,
    frame_stack=1,
    clip_rewards=False,
    terminal_on_life_loss=False,
    eval_epsilon=0.0,
    eval_max_episode_frames=0,
)

PROTOCOLS = {p.name: p for p in (NATURE, MACHADO, CLASSIC)}


class UnknownProtocolError(ValueError):
    pass


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocolError(
            f"unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}"
        ) from None
