"""What the generated task families share: a family's name and knobs, a registry of families by
name, and the readers of difficulty knobs.

A *family* is one generated task (``chain_sum`` of :mod:`adasr.tasks.procedural`,
``proactive_threshold`` of :mod:`adasr.tasks.proactive`, ...): a task name, the knobs it accepts
and what builds its items (a subclass adds those fields). :class:`Families` finds one by name with
one error message for an unknown name; :meth:`Family.check_knobs` refuses unknown knobs; the
``*_knob`` readers validate one knob each and raise :class:`~adasr.errors.ConfigError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Iterable, TypeVar

from adasr.errors import ConfigError

__all__ = [
    "Family",
    "Families",
    "check_size",
    "check_seed",
    "int_knob",
    "bool_knob",
    "choice_knob",
    "range_knob",
    "prob_knob",
]


@dataclass(frozen=True)
class Family:
    """A generated task family.

    Attributes:
        name: the task name (an item's ``task``; ``adasr data build --task``).
        knobs: the difficulty knobs it accepts (its items' other arguments are common to its kind).
    """

    name: str
    knobs: tuple[str, ...]

    def check_knobs(self, knobs: dict, common: tuple[str, ...] = ()) -> None:
        """Refuse knobs that are neither ``common`` (accepted by every family of the kind) nor the
        family's own.

        Raises:
            ConfigError: naming the unknown knobs and listing the valid ones.
        """
        valid = (*common, *self.knobs)
        unknown = sorted(set(knobs) - set(valid))
        if unknown:
            raise ConfigError(f"unknown knob(s) {', '.join(unknown)} for task {self.name!r}: "
                              f"valid knobs are {', '.join(valid)}")


F = TypeVar("F", bound=Family)


class Families(Generic[F]):
    """The families of one kind (``"procedural"``, ``"proactive"``) by name, in registration order."""

    def __init__(self, kind: str, families: Iterable[F]):
        self.kind = kind
        self._by_name: dict[str, F] = {}
        for fam in families:
            if fam.name in self._by_name:
                raise ValueError(f"two {kind} families named {fam.name!r}")
            self._by_name[fam.name] = fam

    @property
    def names(self) -> tuple[str, ...]:
        """The task names, in registration order."""
        return tuple(self._by_name)

    def __contains__(self, task: object) -> bool:
        return task in self._by_name

    def get(self, task: str) -> F:
        """The family named ``task``.

        Raises:
            ConfigError: an unknown name (the message lists the valid ones).
        """
        fam = self._by_name.get(task) if isinstance(task, str) else None
        if fam is None:
            raise ConfigError(f"unknown {self.kind} task {task!r}: valid tasks are {', '.join(self.names)}")
        return fam


def check_size(size: object) -> None:
    """Raise ConfigError unless ``size`` (items wanted) is a positive integer."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")


def check_seed(seed: object) -> None:
    """Raise ConfigError unless ``seed`` is an integer."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")


def _given(knobs: dict, key: str) -> bool:
    return knobs.get(key) is not None


def int_knob(knobs: dict, key: str, default: int, lo: int = 1) -> int:
    """Knob ``key`` (``default`` when not given), an integer ``>= lo``.

    Raises:
        ConfigError: not an integer (booleans are not), or below ``lo``.
    """
    v = knobs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{key} must be an integer >= {lo}, got {v!r}")
    return v


def bool_knob(knobs: dict, key: str, default: bool) -> bool:
    """Knob ``key`` (``default`` when not given), ``True`` or ``False``.

    Raises:
        ConfigError: anything else (``1`` and ``"yes"`` included).
    """
    v = knobs.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def prob_knob(knobs: dict, key: str, default: float, *, upper: bool = True) -> float:
    """Knob ``key`` (``default`` when not given), a probability: a number in ``[0, 1]``, or in
    ``[0, 1)`` with ``upper=False``.

    Raises:
        ConfigError: anything else (booleans included).
    """
    v = knobs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= 1 if upper else 0 <= v < 1):
        raise ConfigError(f"{key} must be a number in [0, {'1]' if upper else '1)'}, got {v!r}")
    return float(v)


def choice_knob(knobs: dict, key: str, default: str, valid: tuple[str, ...]) -> str:
    """Knob ``key`` (``default`` when not given), one of ``valid``.

    Raises:
        ConfigError: anything else (the message lists ``valid``).
    """
    v = knobs.get(key, default)
    if v not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {v!r}")
    return v


def range_knob(knobs: dict, exact: str, default: tuple[int, int], lo: int = 1) -> tuple[int, int]:
    """An integer range ``(min, max)`` from knob ``exact`` (both bounds) or ``min_<exact>`` /
    ``max_<exact>`` (each defaulting to its end of ``default``; ``None`` counts as not given).

    A bound given alone that crosses the other's default moves that default with it
    (``max_terms=2`` with default ``(3, 5)`` gives ``(2, 2)``).

    Raises:
        ConfigError: ``exact`` together with a bound, a bound that is not an integer ``>= lo``,
            or ``min_<exact>`` above ``max_<exact>`` when both are given.
    """
    mn, mx = f"min_{exact}", f"max_{exact}"
    if _given(knobs, exact):
        if _given(knobs, mn) or _given(knobs, mx):
            raise ConfigError(f"give either {exact!r} or {mn!r}/{mx!r}, not both")
        v = int_knob(knobs, exact, default[0], lo)
        return v, v
    a = int_knob(knobs, mn, default[0], lo) if _given(knobs, mn) else default[0]
    b = int_knob(knobs, mx, default[1], lo) if _given(knobs, mx) else default[1]
    if a > b:
        if not _given(knobs, mn):
            a = b
        elif not _given(knobs, mx):
            b = a
        else:
            raise ConfigError(f"{mn} ({a}) must not exceed {mx} ({b})")
    return a, b
