"""Training building blocks of adasr: rewards, GRPO/HRPO advantages, the CB-Stream loss, and
(built on them) data building, SFT and RL trainers.

The math modules (:mod:`adasr.train.rewards`, :mod:`adasr.train.advantages`,
:mod:`adasr.train.cb_stream`) are pure functions on dicts and tensors, with no model or tokenizer
dependency, so they are unit-tested on hand-computed numbers (tests/test_train_math.py).
"""
