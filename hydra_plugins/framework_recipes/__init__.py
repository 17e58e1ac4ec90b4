"""Hydra plugin of the framework: recipe folders as the ``recipe`` config group (see recipe_source)."""
