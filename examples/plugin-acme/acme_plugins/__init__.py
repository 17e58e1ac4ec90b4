"""ACME's plugins for the framework: an example of a third-party plugin package.

Each module is one plugin, listed under the ``framework`` entry-point group in pyproject.toml:

* ``jsonl_source``: data source ``acme_jsonl``, a table in a JSON Lines file;
* ``class_share``: monitor ``acme_class_share``, alerts when the share of a predicted class moves
  away from its share in the training data;
* ``round_robin``: traffic strategy ``acme_round_robin``, a deterministic weighted split that
  rolls the candidate back when its error rate breaks a limit;
* ``audit``: lifecycle hooks only; writes every event of a run to ``acme_audit.jsonl`` in the
  run directory;
* ``recipe_folder``: ships the ``acme_widgets`` recipe (``+recipe=acme_widgets``).
"""
from pathlib import Path

#: files that ship inside the package
PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_TABLE = PACKAGE_DIR / "data" / "widgets.jsonl"
RECIPES_DIR = PACKAGE_DIR / "recipes"
