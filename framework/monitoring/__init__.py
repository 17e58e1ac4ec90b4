"""Monitoring, the core's part: drift statistics with family-wise control (``drift``), served
records cut into windows (``windows``) and performance before and after labels (``performance``).

No monitoring library is imported here: plugins (e.g. ``plugins.monitor_whylogs``) turn their
profiles into the summaries these functions test.
"""
from .drift import (  # noqa: F401
    CategoricalSummary,
    ColumnDrift,
    DriftSettings,
    NumericSummary,
    WindowDrift,
    assess,
    assess_windows,
    chi_square_test,
    holm_adjusted,
    ks_test,
    summarize,
)
from .windows import by_version, check_window, cut_windows  # noqa: F401
from .performance import Calibration, estimate_accuracy, join_labels, true_accuracy, wilson  # noqa: F401
