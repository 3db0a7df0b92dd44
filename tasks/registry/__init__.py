"""A gated model's life in MLflow's registry: registration, promotion, lineage, reproduction, the pyfunc.

- register.py   register a gated candidate; promote and roll back by alias; the champion's accuracy
- lineage.py    how a version was made (run, params, data hashes, code), history, diff of two versions
- reproduce.py  rebuild a version from its lineage in a folder of its own, and compare
- pyfunc.py     the registered model: an MLflow pyfunc over the int8 .tflite (loaded by MLflow, from code)
"""

from tasks.registry.lineage import Build, diff, history, lineage, recorded_build, recorded_lock
from tasks.registry.register import (
    CANDIDATE,
    CHAMPION,
    MOVE_ALIASES,
    PREVIOUS,
    Moved,
    Registered,
    RegistryError,
    alias_version,
    beats_champion,
    champion_accuracy,
    client,
    params_hash,
    parse_ref,
    promote,
    register,
    resolve,
    rollback,
    target,
)

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "MOVE_ALIASES",
    "PREVIOUS",
    "Build",
    "Moved",
    "Registered",
    "RegistryError",
    "alias_version",
    "beats_champion",
    "champion_accuracy",
    "client",
    "diff",
    "history",
    "lineage",
    "params_hash",
    "parse_ref",
    "promote",
    "recorded_build",
    "recorded_lock",
    "register",
    "resolve",
    "rollback",
    "target",
]
