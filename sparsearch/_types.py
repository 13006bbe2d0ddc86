"""Type aliases shared by features/, spaces/ and search/ (issue #32 item 5: types checked at the seams).

Use these instead of ``Any`` where a value really is one of these shapes; prefer a dataclass, a ``TypedDict`` or a
``Protocol`` where the shape is known more precisely, and ``object`` where a value is only passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

#: One value of a JSON document (what ``json.loads`` returns, what ``json.dumps`` accepts).
JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]
#: A JSON object: the run JSON, a study record, an MLflow tag payload.
JSONDict: TypeAlias = dict[str, JSONValue]
#: A JSON object only read (its values may be any JSON value, or a value whose type is narrower than JSONValue).
JSONMapping: TypeAlias = Mapping[str, object]

#: One sampled hyperparameter, as Optuna's distributions return it (``FloatDistribution`` -> float,
#: ``IntDistribution`` -> int, ``CategoricalDistribution`` -> one of its choices).
ParamValue: TypeAlias = str | int | float | bool | None
#: A trial's parameters by name (``Trial.params``, ``enqueue_trial``'s argument).
Params: TypeAlias = dict[str, ParamValue]
