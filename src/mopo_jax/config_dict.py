"""Config dataclasses as JSON-ready dicts: `config_to_dict`, the one conversion every config.json uses."""

from __future__ import annotations

import dataclasses
import json


def config_to_dict(config) -> dict:
    """JSON-ready dict of a config dataclass (nested ones too; tuples become lists, as JSON reads
    them back), e.g. a TrainConfig or a BehaviorConfig."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
