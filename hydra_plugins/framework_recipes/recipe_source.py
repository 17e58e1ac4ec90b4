"""``recipes://FOLDER``: a folder of ``NAME.yaml`` recipes seen by Hydra as the ``recipe`` group.

A user keeps recipes in any folder (``recipes_dir=`` or ``FRAMEWORK_RECIPES``), not in a
``recipe/`` subfolder of a config directory, so ``+recipe=NAME`` needs a config source that maps
``recipe/NAME`` onto ``FOLDER/NAME.yaml``. Hydra finds this class the documented way: it scans the
``hydra_plugins`` namespace package and registers every ``ConfigSource`` subclass by its scheme;
the framework then puts ``recipes://FOLDER`` entries on ``hydra.searchpath``.

Only Hydra's public plugin API is used (``hydra.plugins.config_source``).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

GROUP = "recipe"
_HEADER = re.compile(r"^\s*#\s*@(\w+)\s+(\S+)\s*$")


def header_of(text: str) -> Dict[str, Optional[str]]:
    """The ``# @key value`` lines at the top of a config file (``@package`` above all)."""
    header: Dict[str, Optional[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if match is None:
            break
        header[match.group(1)] = match.group(2)
    header.setdefault("package", None)
    return header


class RecipeFolderSource(ConfigSource):
    """Maps ``recipe/NAME`` onto ``FOLDER/NAME.yaml`` for one recipe folder."""

    @staticmethod
    def scheme() -> str:
        return "recipes"

    def _file(self, config_path: str) -> Optional[str]:
        config_path = config_path.strip("/")
        if not config_path.startswith(GROUP + "/"):
            return None
        name = config_path[len(GROUP) + 1:]
        if not name.endswith(".yaml"):
            name += ".yaml"
        if "/" in name or name.startswith("."):
            return None
        return os.path.join(self.path, name)

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not os.path.isfile(path):
            raise ConfigLoadError(f"Config not found: {config_path} in {self.path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return ConfigResult(config=OmegaConf.create(text), path=self.full_path(), provider=self.provider,
                            header=header_of(text))

    def available(self) -> bool:
        return os.path.isdir(self.path)

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and os.path.isfile(path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        where = config_path.strip("/")
        if where == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if where != GROUP or results_filter == ObjectType.GROUP or not os.path.isdir(self.path):
            return []
        return sorted(f[:-5] for f in os.listdir(self.path) if f.endswith(".yaml") and not f.startswith("."))
