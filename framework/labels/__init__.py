"""Labels: labeling functions, label models, active learning, Label Studio files, schema migrations.

Plain numpy / pandas algorithms with no Ray and no torch, used by the built-in labelers
(``plugins/label_*.py``) and by the core's label stage. What a plugin author needs is public:

* :func:`labeling_function`: put a Python callable on the allow-list a ``type: callable``
  labeling function may name (a recipe never names an import path);
* :mod:`~framework.labels.functions`: keyword, regex, threshold, model and callable functions,
  the label matrix and its analysis (coverage, overlap, conflicts, empirical accuracy);
* :mod:`~framework.labels.model`: majority vote and the Dawid-Skene generative label model;
* :mod:`~framework.labels.active`: uncertainty sampling and its diversity-aware variant;
* :mod:`~framework.labels.studio`: Label Studio task and export JSON, and a simulated annotator;
* :mod:`~framework.labels.schema`: label schemas and their migrations (add, remove, merge, split).
"""
from .functions import ABSTAIN, labeling_function, registered_callables  # noqa: F401
from .schema import LabelSchema, Migration, schema_id  # noqa: F401
