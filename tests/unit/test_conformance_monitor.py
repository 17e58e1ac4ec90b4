"""Every built-in monitor passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations



from framework.testing import MonitorContract, served_window
from plugins.monitor_whylogs import WhylogsDriftMonitor


class TestWhylogsDriftContract(MonitorContract):
    monitor_cls = WhylogsDriftMonitor

    def invalid_config(self):
        return WhylogsDriftMonitor.Config(alpha=1.5)

    def alerting_window(self, reference):
        # every served tumour three spreads larger than in training: drift in the size columns
        rows = reference.test.copy()
        features = reference.dataset.features
        rows[features] = rows[features] + 3 * reference.train[features].std()
        return served_window(rows, features, rows[reference.dataset.target].tolist())

