"""Plugin ``acme_recipes``: ships the recipes in ``acme_plugins/recipes`` (``+recipe=acme_widgets``)."""
from __future__ import annotations

from framework import hookimpl

from acme_plugins import RECIPES_DIR


@hookimpl
def recipe_search_paths():
    return [str(RECIPES_DIR)]
