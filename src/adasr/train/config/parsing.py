"""Reading a training config: a YAML/JSON file and ``--key value`` overrides -> a validated,
resolved :class:`~.configs.SFTConfig` or :class:`~.configs.RLConfig` (:func:`load_config`).

Parsing goes through TRL's :class:`trl.TrlParser` (an ``HfArgumentParser``): the file's values
become the parser's defaults and the overrides are parsed as a command line, with the parser's
own type conversion. Nested group sections (``rewards: {lam_deep: 0.2}``) are lifted to top-level
keys first. Unknown keys, wrong types and out-of-range values end in a one-line
:class:`~adasr.errors.ConfigError` that names the key (with a "did you mean" hint) and the file.
Files written for the earlier adasr field names (``batch_size``, ``grad_accum``, ``num_epochs``,
``lr_scheduler``; RL ``group_size``, ``kl_beta``, ``adv_scale``) still load: :data:`LEGACY_KEYS`
renames them (logged once per file). A file's ``env:`` mapping is applied to ``os.environ`` by
:func:`apply_env` (logged) before the config is built, because the parent classes read
``ACCELERATE_*`` variables when they are constructed. Field reference: docs/TRAINING.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from trl import TrlParser

from adasr.errors import ConfigError
from adasr.train.config.checks import closest, first_line
from adasr.train.config.configs import ADVANTAGES, RLConfig, SFTConfig
from adasr.train.config.groups import field_groups

__all__ = ["LEGACY_KEYS", "KINDS", "ConfigParser", "apply_env", "config_class", "config_from_dict", "infer_kind",
           "load_config", "read_config_file"]

logger = logging.getLogger(__name__)

KINDS = {"sft": "sft", "rl": "rl", "grpo": "rl", "hrpo": "rl"}
"""Trainer kind (``adasr train`` stage) -> config kind."""

LEGACY_KEYS = {
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "num_epochs": "num_train_epochs",
    "lr_scheduler": "lr_scheduler_type",
    "group_size": "num_generations",
    "kl_beta": "beta",
    "adv_scale": "scale_rewards",
}
"""Earlier adasr key -> the ``TrainingArguments``/``GRPOConfig`` field it names. An RL file's
``batch_size`` counted prompts per step: it becomes ``per_device_train_batch_size = batch_size *
num_generations / gradient_accumulation_steps``; ``adv_scale: std`` becomes ``scale_rewards: group``."""


def config_class(kind: str) -> type[SFTConfig] | type[RLConfig]:
    """The config class of a trainer kind: ``sft`` -> :class:`SFTConfig`; ``rl``, ``grpo``,
    ``hrpo`` -> :class:`RLConfig`.

    Raises:
        ConfigError: an unknown kind.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r}: use one of {', '.join(KINDS)}")
    return SFTConfig if KINDS[kind] == "sft" else RLConfig


class ConfigParser(TrlParser):
    """TRL's parser for one config class whose mistakes raise :class:`ConfigError` (argparse would
    print usage and exit). Abbreviated options are off: ``--learning_rat`` is a mistake, not
    ``--learning_rate``."""

    def __init__(self, cls: type):
        super().__init__(cls, allow_abbrev=False, add_help=False, prog="adasr train")

    def error(self, message: str):  # argparse's hook for every parse error
        raise ConfigError(re.sub(r"^argument --([\w]+)(/--[\w-]+)?: ", r"key '\1': ", message))

    def keys(self) -> list[str]:
        """Every config key (one per field)."""
        return [a.dest for a in self._actions if a.option_strings and a.dest != "help"]


def load_config(path: str | Path | None, kind: str, overrides: Sequence[str] = ()) -> SFTConfig | RLConfig:
    """Read a YAML or JSON training config, then apply ``--key value`` overrides.

    Args:
        path: a ``.yaml``/``.yml`` or ``.json`` file holding one mapping of key -> value (the
            groups ``data``, ``loss``, ``stream``, ``engine``, ``rewards`` may be nested
            mappings; an ``env`` mapping sets environment variables, as in TRL: see
            :func:`apply_env`); ``None``: the defaults.
        kind: ``sft``, ``rl``, ``grpo`` or ``hrpo`` (``grpo``/``hrpo`` also set ``advantage``
            unless the file or an override sets it).
        overrides: command-line style arguments (``["--learning_rate", "1e-4", "--lora"]``),
            parsed by TRL's parser; they win over the file.

    Returns:
        A validated and resolved :class:`SFTConfig` or :class:`RLConfig` (its ``validate()`` and
        ``resolve()`` have run: an unset ``protocol`` follows the starting model).

    Raises:
        ConfigError: missing/unreadable file, not a mapping, unknown key, wrong type, out-of-range
            value, unknown task or a protocol the starting model contradicts; the one-line
            message names the key and the file.
    """
    config_class(kind)  # unknown kind -> ConfigError before touching the file
    data, where = {}, "command line"
    if path is not None:
        p = Path(path).expanduser()
        data, where = read_config_file(p), str(p)
    return config_from_dict(data, kind, overrides=overrides, where=where)


def _trainer_of(advantage: str) -> str:
    """The ``adasr train`` stage that trains an advantage (``proactive`` is a GRPO variant)."""
    return "grpo" if advantage == "proactive" else advantage


def infer_kind(path: str | Path) -> str:
    """The trainer a config file is for, read from its keys: ``grpo`` or ``hrpo`` when it sets
    ``advantage`` (``proactive`` trains with GRPO), ``hrpo`` (RL's default advantage) when it holds
    RL-only keys (``rewards``, ``init``, ``num_generations``, ...), ``sft`` when it holds SFT-only
    keys (``layout``, ``cb_beta``, ...). Used by ``adasr train CONFIG.yaml``.

    Raises:
        ConfigError: an unreadable file, or one whose keys fit both trainers or neither (the
            message says to name the stage: ``adasr train sft|grpo|hrpo --config FILE``).
    """
    p = Path(path).expanduser()
    data = read_config_file(p)
    flat: dict = {}  # top-level keys and the keys of nested groups
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        flat[key] = value
    if "advantage" in flat:
        adv = flat["advantage"]
        if adv not in ADVANTAGES:
            raise ConfigError(f"{p}: advantage must be one of {', '.join(ADVANTAGES)}, got {adv!r}")
        return _trainer_of(adv)
    sft_keys = {f.name for f in dataclasses.fields(SFTConfig)} | set(field_groups(SFTConfig))
    rl_keys = {f.name for f in dataclasses.fields(RLConfig)} | set(field_groups(RLConfig))
    only_sft, only_rl = flat.keys() & (sft_keys - rl_keys), flat.keys() & (rl_keys - sft_keys)
    if only_rl and not only_sft:
        return "hrpo"
    if only_sft and not only_rl:
        return "sft"
    raise ConfigError(f"{p}: cannot tell which trainer this config is for; name it: "
                      f"`adasr train sft|grpo|hrpo --config {p}`")


def read_config_file(p: str | Path) -> dict:
    """The mapping of the YAML or JSON config file at path ``p``, with its ``base`` config merged in.

    A file may name another config as ``base: other.yaml`` (a path relative to the file's own
    folder; chains allowed, as mmengine's ``_base_``): the base's mapping is read first and the
    file's keys override it, group sections (``engine``, ``stream``, ``rewards``, ``env``, ...) key
    by key, every other value (lists included) whole. So a knob run states only what it changes.

    Raises:
        ConfigError: a missing, unreadable or invalid file, one that is not a mapping, a ``base``
            that is not a path or is missing, or a cycle of bases.
    """
    return _read_with_base(Path(p), ())


def _read_with_base(p: Path, chain: tuple[Path, ...]) -> dict:
    data = _read_one(p)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: base must be the path of another config file, got {base!r}")
    bp = (p.parent / base).resolve()
    here = chain + (p.resolve(),)
    if bp in here:
        raise ConfigError(f"{p}: base {base!r} makes a cycle: {' -> '.join(str(x) for x in here + (bp,))}")
    if not bp.is_file():
        raise ConfigError(f"{p}: base config not found: {bp}")
    merged = _read_with_base(bp, here)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _read_one(p: Path) -> dict:
    """One file's own mapping (its ``base`` not followed)."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {p}: {err}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}: not valid JSON (line {err.lineno}: {err.msg})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{p}: not valid YAML ({line}{problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of key: value, got {type(data).__name__}")
    return data


def config_from_dict(data: dict, kind: str, *, overrides: Sequence[str] = (), where: str = "config") -> SFTConfig | RLConfig:
    """Build, validate and resolve a config from a mapping and ``--key value`` overrides (the
    steps of :func:`load_config`), through TRL's parser: the mapping's values become the parser's
    defaults, the overrides are parsed as a command line. A mapping's ``env`` is applied first
    (:func:`apply_env`).

    Raises:
        ConfigError: see :func:`load_config`.
    """
    cls = config_class(kind)
    parser = ConfigParser(cls)
    keys = parser.keys()
    try:
        flat = _flatten(dict(data), cls, keys)
        env = flat.pop("env", None)
        flat = _rename_legacy(flat, cls, where)
        for key, value in flat.items():
            if key not in keys:
                raise ConfigError(f"unknown key {key!r} for {cls.kind.upper()} training{_did_you_mean(key, keys)}")
            _check_shape(cls, key, value)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if env is not None:
        apply_env(env, where)
    # scalars as text, so that argparse converts and checks them as it does a command line
    parser.set_defaults_with_config(**{k: _as_text(v) for k, v in flat.items()})
    given = flat.keys() | _override_keys(overrides)
    source = f"{where} or the command line" if overrides and where != "command line" else where
    try:
        cfg, rest = parser.parse_args_into_dataclasses(list(overrides), return_remaining_strings=True,
                                                       look_for_args_file=False)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{source}: {first_line(err)}") from None
    if rest:
        opt = next((a for a in rest if a.startswith("-")), rest[0])
        key = opt.lstrip("-").split("=")[0].replace("-", "_")
        hint = _legacy_hint(key) or _did_you_mean(key, keys)
        raise ConfigError(f"unknown option {opt!r} for {cls.kind.upper()} training{hint}")
    if KINDS[kind] == "rl" and kind in ADVANTAGES:
        if "advantage" not in given:
            cfg.advantage = kind
        elif _trainer_of(cfg.advantage) != kind:
            raise ConfigError(f"{source}: advantage {cfg.advantage!r} contradicts `adasr train {kind}`: "
                              f"run `adasr train {_trainer_of(cfg.advantage)}` or drop the advantage key")
    try:
        cfg.validate()
        cfg.resolve()
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def apply_env(env: Any, where: str) -> None:
    """Set the environment variables of a config's ``env:`` mapping (as TRL does), logging each
    name. Runs before the config is built: ``TrainingArguments`` reads ``ACCELERATE_*`` variables
    (mixed precision, DeepSpeed, CPU) when it is constructed.

    Raises:
        ConfigError: ``env`` is not a mapping.
    """
    if not isinstance(env, dict):
        raise ConfigError(f"{where}: env must be a mapping of variable: value")
    if env:
        logger.info("%s: env sets %s", where, ", ".join(str(k) for k in env))
    os.environ.update({str(k): str(v) for k, v in env.items()})


def _flatten(data: dict, cls: type, keys: list[str]) -> dict:
    """Lift nested group sections (``rewards: {lam_deep: 0.2}``) to top-level keys."""
    groups = {g: names for g, names in field_groups(cls).items() if g not in keys}
    flat: dict = {}
    for key, value in data.items():
        if key in groups and isinstance(value, dict):
            for sub, v in value.items():
                if sub not in groups[key]:
                    raise ConfigError(f"unknown key {sub!r} in section {key!r}{_did_you_mean(str(sub), groups[key])}")
                flat[sub] = v
        else:
            flat[key] = value
    return flat


def _rename_legacy(flat: dict, cls: type, where: str) -> dict:
    """Rename :data:`LEGACY_KEYS` (with the RL ``batch_size`` and ``adv_scale`` conversions)."""
    old = [k for k in flat if k in LEGACY_KEYS and LEGACY_KEYS[k] not in flat]
    if not old:
        return flat
    logger.info("%s: earlier adasr key(s) %s read as %s", where, ", ".join(old),
                ", ".join(LEGACY_KEYS[k] for k in old))
    out = {LEGACY_KEYS.get(k, k) if k in old else k: v for k, v in flat.items()}
    if cls.kind == "rl":
        if "batch_size" in old:  # prompts per step -> rollouts per micro-batch
            prompts = out.pop("per_device_train_batch_size")
            g = out.get("num_generations", cls.__dataclass_fields__["num_generations"].default)
            ga = out.get("gradient_accumulation_steps", 1)
            if not all(isinstance(x, int) and x > 0 for x in (prompts, g, ga)) or (prompts * g) % ga:
                raise ConfigError(f"batch_size * group_size ({prompts} * {g}) rollouts per step must be divisible "
                                  f"by grad_accum ({ga})")
            out["per_device_train_batch_size"] = prompts * g // ga
        if "adv_scale" in old:
            out["scale_rewards"] = {"std": "group"}.get(out["scale_rewards"], out["scale_rewards"])
    return out


def _check_shape(cls: type, key: str, value: Any) -> None:
    """A list or mapping only where the field takes one (argparse leaves non-text values alone)."""
    if not isinstance(value, (list, dict)):
        return
    hint = typing.get_type_hints(cls)[key]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = {typing.get_origin(a) or a for a in (typing.get_args(hint) if union else (hint,))}
    if (isinstance(value, list) and list not in kinds) or (isinstance(value, dict) and dict not in kinds):
        raise ConfigError(f"key {key!r} takes one value, got a {type(value).__name__} {value!r}"[:160])


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, (bool, int, float)) else value


def _override_keys(overrides: Sequence[str]) -> set[str]:
    return {a.lstrip("-").split("=")[0].replace("-", "_") for a in overrides if a.startswith("--")}


def _legacy_hint(key: str) -> str:
    return f" (renamed: {LEGACY_KEYS[key]!r})" if key in LEGACY_KEYS else ""


def _did_you_mean(key: str, names: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest name (an earlier adasr name suggests its new name)."""
    hint = closest(key, list(names) + [k for k, v in LEGACY_KEYS.items() if v in names])
    if hint is None:
        return ""
    return f" (did you mean {hint if hint in names else LEGACY_KEYS[hint]!r}?)"
