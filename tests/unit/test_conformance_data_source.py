"""Every built-in data source passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations



from framework.testing import DataSourceContract
from plugins.data_sklearn import SklearnDataSource


class TestSklearnBreastCancerContract(DataSourceContract):
    source_cls = SklearnDataSource

    def invalid_config(self):
        return SklearnDataSource.Config(dataset="no_such_table")



class TestSklearnWineContract(DataSourceContract):
    source_cls = SklearnDataSource

    def make_config(self):
        return SklearnDataSource.Config(dataset="wine")

