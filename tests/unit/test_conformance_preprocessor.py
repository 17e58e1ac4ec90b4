"""The built-in preprocessor passes its conformance kit."""
from framework.testing import PreprocessorContract

from plugins.features_tabular import TabularPreprocessor


class TestTabularPreprocessorContract(PreprocessorContract):
    preprocessor_cls = TabularPreprocessor

    def invalid_config(self):
        return TabularPreprocessor.Config(impute="mode")
