"""Every built-in trainer passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations

import pytest

from framework.testing import TrainerContract
from plugins.train_tune import TuneTrainer


class TestTuneTrainerContract(TrainerContract):
    trainer_cls = TuneTrainer

    def make_config(self):
        # two trials of two epochs: the kit checks the shape of the result, not its accuracy
        return TuneTrainer.Config(num_samples=2, max_epochs=2, max_concurrent_trials=2)

    def invalid_config(self):
        return TuneTrainer.Config(num_samples=0)

    @pytest.mark.ray
    def test_fit_returns_a_trained_model_that_fits_the_splits(self, tmp_path, ray_session):  # Ray Tune trials
        super().test_fit_returns_a_trained_model_that_fits_the_splits(tmp_path)
