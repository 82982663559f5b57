"""How every pipeline call takes its settings: `call(inputs, config=None, **overrides)`, where config
is the method's frozen config object (GenerationConfig, ClassifyConfig, ImageConfig), or a policy
object that stands for the config with that policy, and overrides replace single fields."""

from __future__ import annotations

import dataclasses

from ..errors import InputError


def resolve(cls, config, overrides: dict, policy_field: str | None = None, policy_types: tuple = ()):
    """The config to run with: cls() when None; a policy object → cls(**{policy_field: it}); then the
    keyword overrides (unknown names refused, the result re-validated by the dataclass)."""
    if config is None:
        config = cls()
    elif policy_types and isinstance(config, policy_types):
        config = cls(**{policy_field: config})
    elif not isinstance(config, cls):
        accepted = " or ".join([cls.__name__, *(t.__name__ for t in policy_types)])
        raise InputError(f"config must be a {accepted}, got {type(config).__name__} (pass single settings "
                         "as keyword arguments)")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InputError(f"unknown settings {unknown}; {cls.__name__} has {', '.join(names)}")
    return dataclasses.replace(config, **overrides) if overrides else config
