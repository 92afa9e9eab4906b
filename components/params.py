"""The base of every component's parameters (TensorFlow-free).

Each component has one small dataclass (components/<name>/params.py) that owns its settings:
the default of each (written there and nowhere else), the checks of their values, and for the
trainer the choice of what enters the run fingerprint. The pipeline's config is derived from
these classes (pipeline/config.py), the component takes its instance as one JSON execution
parameter, `params`, readable in ML Metadata, and the executor reads it back typed with
from_json, which checks it again: an executor never sees an unchecked value.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Type, TypeVar

from components.errors import ConfigError

P = TypeVar('P', bound='ComponentParams')
EXEC_PROPERTY = 'params'  # the execution parameter that carries a component's params as JSON


@dataclasses.dataclass
class ComponentParams:
  """A component's settings. Subclasses add fields (each with its one default) and problems()."""

  def problems(self) -> List[str]:
    """One message per impossible value; empty when every value is usable."""
    return []

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  def to_dict(self) -> Dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(type(self))}

  @classmethod
  def from_json(cls: Type[P], text: str) -> P:
    """The params an execution was given, checked; ConfigError names every problem at once."""
    data = json.loads(text)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
      raise ConfigError(f'{cls.__name__}: unknown parameter(s) {unknown}')
    params = cls(**data)
    problems = [f'{f.name} must be {f.type}, got {getattr(params, f.name)!r}'
                for f in dataclasses.fields(cls) if not _has_type(getattr(params, f.name), f.type)]
    problems = problems or cls.problems(params)  # the range checks need the right types
    if problems:
      raise ConfigError(f'invalid {cls.__name__}:\n  - ' + '\n  - '.join(problems))
    return params

  @classmethod
  def of(cls: Type[P], source: Any) -> P:
    """This class's fields taken from any object that has them (the pipeline's config)."""
    return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})


def _has_type(value: Any, type_name: str) -> bool:
  """Field types are written as names (from __future__ import annotations): bool, int, float,
  str. An int is a float; a bool is neither an int nor a float."""
  if type_name == 'float':
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if type_name == 'int':
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, {'bool': bool, 'str': str}[type_name])


def check(problems: List[str], ok: bool, message: str) -> None:
  """Appends message when not ok: the one idiom of every problems() method."""
  if not ok:
    problems.append(message)


def is_probability(value: float) -> bool:
  return 0.0 <= value <= 1.0
