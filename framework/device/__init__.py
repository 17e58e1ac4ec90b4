"""``target: device``: pick the best model variant that fits a device budget and bundle it.

A run keeps ``state.variants`` (the fp32 export, then each ONNX-level compression of it). For a
device target the framework

1. measures every variant (:func:`measure_variant`): file size, test accuracy, batch-1 latency on
   ONE thread and the RAM it takes to run it,
2. keeps those within every set budget and picks the most accurate (:func:`pick_variant`), or
   fails naming each budget no variant meets and the best value any variant reached for it,
3. writes a self-contained bundle (:func:`write_bundle`): the ONNX model, its input schema,
   preprocessing metadata, a small runner that needs only onnxruntime and numpy (no torch, no
   Ray, no framework), a README and a manifest with the sha256 of every file,
4. checks the bundle by running its runner in a clean subprocess (:func:`verify_bundle`).

``measure`` holds the figures and the choice; ``bundle`` writes and checks the bundle;
``runner``, ``ram_probe`` and ``verify_probe`` are the scripts that run in clean child processes.
"""
from .bundle import BUNDLE_FILES, FORBIDDEN_MODULES, WATCHED_MODULES, check_manifest, verify_bundle, write_bundle
from .measure import BUDGET_FIELDS, DeviceBudget, budget_limits, measure_ram, measure_variant, pick_variant

__all__ = ["BUDGET_FIELDS", "BUNDLE_FILES", "DeviceBudget", "FORBIDDEN_MODULES", "WATCHED_MODULES", "budget_limits",
           "check_manifest", "measure_ram", "measure_variant", "pick_variant", "verify_bundle", "write_bundle"]
