"""Lightning data modules. Default data is generated from a seed or shipped in an installed
package, so nothing is downloaded at run time:

* time series for latent ODEs: :class:`SpiralsDataModule` (Chen et al.'s Archimedean spirals),
  :class:`PeriodicDataModule` (Rubanova et al.'s irregularly sampled sines);
* images for ODE-Net classifiers: :class:`DigitsDataModule` (scikit-learn's bundled 8x8 digits),
  :class:`MNISTDataModule` (IDX files, downloaded on first use into ``data_dir``);
* 2-D densities for CNFs: :class:`Toy2DDataModule` (FFJORD's toy sets).
"""

from datamodules.digits import DigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.periodic import PeriodicDataModule
from datamodules.spirals import SpiralsDataModule
from datamodules.timeseries import TimeSeriesDataModule, TimeSeriesSplit
from datamodules.toy2d import Toy2DDataModule

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "PeriodicDataModule",
    "SpiralsDataModule",
    "TimeSeriesDataModule",
    "TimeSeriesSplit",
    "Toy2DDataModule",
]
