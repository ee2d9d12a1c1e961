"""Training configs: adasr's fields on top of the ecosystem's training arguments.

:class:`SFTConfig` is a ``transformers.TrainingArguments`` and :class:`RLConfig` a
``trl.GRPOConfig``, so every field of the parent class is a config key under its own name
(``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``optim``, ``deepspeed``,
``fsdp``, ``run_name``, ``push_to_hub``/``hub_model_id``, ``report_to``, ``bf16``, ... and for
RL ``num_generations``, ``beta``, ``epsilon``, ``loss_type``, ``scale_rewards``,
``temperature`` ...). adasr's own fields come in groups (``model``, ``data``, ``loss``,
``stream``, ``engine``, ``rewards``); in a file they may be written flat or as nested sections
(``rewards: {lam_deep: 0.2}``). Field reference: docs/TRAINING.md.

One module per job:

* :mod:`.groups` — the field groups (one dataclass each; the reward knobs come from
  :mod:`adasr.train.rewards`, where they are declared) and :func:`field_groups`;
* :mod:`.configs` — :class:`SFTConfig` and :class:`RLConfig`: construction, ``validate()``
  (checks only) and ``resolve()`` (the protocol of the starting model);
* :mod:`.checks` — the task and its data file, ranges, closest names;
* :mod:`.parsing` — :func:`load_config`: a YAML/JSON file and ``--key value`` overrides through
  TRL's parser, earlier key names (:data:`LEGACY_KEYS`), the ``env:`` mapping, and
  :func:`infer_kind` for ``adasr train CONFIG.yaml``.
"""

from adasr.train.config.checks import check_task, known_tasks
from adasr.train.config.configs import RLConfig, SFTConfig
from adasr.train.config.groups import (
    DataArguments,
    EngineArguments,
    InitArguments,
    LayoutArguments,
    LossArguments,
    ModelArguments,
    RewardArguments,
    StreamArguments,
    field_groups,
)
from adasr.train.config.parsing import (
    LEGACY_KEYS,
    ConfigParser,
    config_class,
    config_from_dict,
    infer_kind,
    load_config,
    read_config_file,
)

__all__ = [
    "SFTConfig", "RLConfig", "ModelArguments", "InitArguments", "DataArguments", "LayoutArguments", "LossArguments",
    "StreamArguments", "EngineArguments", "RewardArguments", "ConfigParser", "LEGACY_KEYS", "field_groups",
    "load_config", "config_from_dict", "read_config_file", "config_class", "infer_kind", "known_tasks", "check_task",
]
