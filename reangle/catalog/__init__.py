"""The model catalog: the models this server serves, declared in TOML (docs/catalog.md).

`load_catalog` reads the shipped `models.toml` and the operator's file on top of it and checks every entry;
any problem is one CatalogError line naming the file, the entry and the field. `entry_inputs` gives an
entry's input classes with its defaults, `availability` says whether the settings let it run.
"""

from reangle.catalog.availability import availability
from reangle.catalog.defaults import InvalidDefault, entry_inputs, with_defaults
from reangle.catalog.errors import CatalogError
from reangle.catalog.load import load_catalog
from reangle.catalog.model import (
    DIALECTS,
    ENGINE_TASKS,
    ENGINES,
    TASKS,
    Catalog,
    Dialect,
    EngineFamily,
    Limits,
    ModelEntry,
    ModelLora,
    Task,
)

__all__ = [
    "DIALECTS",
    "ENGINES",
    "ENGINE_TASKS",
    "TASKS",
    "Catalog",
    "CatalogError",
    "Dialect",
    "EngineFamily",
    "InvalidDefault",
    "Limits",
    "ModelEntry",
    "ModelLora",
    "Task",
    "availability",
    "entry_inputs",
    "load_catalog",
    "with_defaults",
]
