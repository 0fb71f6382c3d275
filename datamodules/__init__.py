"""Lightning data modules: seeded synthetic irregularly sampled time series."""

from datamodules.periodic import PeriodicDataModule
from datamodules.spirals import SpiralsDataModule
from datamodules.timeseries import TimeSeriesDataModule, TimeSeriesSplit

__all__ = ["PeriodicDataModule", "SpiralsDataModule", "TimeSeriesDataModule", "TimeSeriesSplit"]
