"""Game names: the ROMs ale-py ships, and the spellings users type for them."""

from __future__ import annotations

import difflib
import functools
import re

# Non-Atari environments used as check tiers, by the name users type.
CLASSIC_GAMES = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1", "mountaincar": "MountainCar-v0"}
# MinAtar (Young & Tian 2019; the optional extra `pip install -e ".[minatar]"`), full action sets as the
# paper's DQN uses them.
MINATAR_GAMES = {f"minatar_{g}": f"MinAtar/{g.title().replace('_', '')}-v0"
                 for g in ("asterix", "breakout", "freeway", "seaquest", "space_invaders")}
# Goal-conditioned tasks: `bitflip<n>`, the n-bit task of the HER paper (wrappers/bitflip.py).
BITFLIP = re.compile(r"^bitflip(\d+)$")


class UnknownGameError(ValueError):
    pass


@functools.cache
def atari_games() -> tuple[str, ...]:
    """ROM ids shipped with ale-py, in snake_case (`space_invaders`)."""
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def _key(name: str) -> str:
    # `SpaceInvaders`, `space_invaders`, `spaceinvaders`, `Space-Invaders` and `ALE/SpaceInvaders-v5`
    # all name the same game.
    name = re.sub(r"^ALE/|-v\d+$", "", name.strip())
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_game(name: str) -> str:
    """The canonical name of a game: an Atari ROM id (`space_invaders`) or a classic-control id.

    Raises UnknownGameError naming the closest known games.
    """
    key = _key(name)
    for rom in atari_games():
        if _key(rom) == key:
            return rom
    if key in CLASSIC_GAMES or key in {_key(v) for v in CLASSIC_GAMES.values()}:
        return next(k for k, v in CLASSIC_GAMES.items() if key in (k, _key(v)))
    for minatar in MINATAR_GAMES:
        if key == _key(minatar):
            return minatar
    bits = BITFLIP.match(key)
    if bits and int(bits.group(1)) >= 1:
        return f"bitflip{int(bits.group(1))}"
    known = list(atari_games()) + list(CLASSIC_GAMES) + list(MINATAR_GAMES)
    close = difflib.get_close_matches(key, [_key(g) for g in known], n=3, cutoff=0.5)
    names = [g for c in close for g in known if _key(g) == c]
    hint = f" Did you mean: {', '.join(names)}?" if names else ""
    raise UnknownGameError(
        f"unknown game {name!r}.{hint} Known games are the {len(atari_games())} ROMs of ale-py "
        f"(`python -c 'import ale_py.roms as r; print(r.get_all_rom_ids())'`), {', '.join(CLASSIC_GAMES)}, {', '.join(MINATAR_GAMES)} and bitflip<n> (n >= 1 bits)."
    )


def is_atari(game: str) -> bool:
    return canonical_game(game) in atari_games()


def bitflip_bits(game: str) -> int | None:
    """n for the n-bit flipping task `bitflip<n>`; None for other games."""
    bits = BITFLIP.match(canonical_game(game))
    return int(bits.group(1)) if bits else None
