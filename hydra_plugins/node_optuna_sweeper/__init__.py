"""A Hydra sweeper that searches hyperparameters with Optuna (``hydra/sweeper=node_optuna``).

Why our own plugin: the released ``hydra-optuna-sweeper`` (1.2.0 and 1.3.0 alike) requires
``optuna>=2.10,<3``. Installing it would downgrade Optuna to 2.10.1, whose sqlite storage fails
under SQLAlchemy 2 (an ``AssertionError`` in ``get_current_version`` on creating a study: checked
with optuna 2.10.1, SQLAlchemy 2.1.9, NumPy 2.4), so a search could not be stored or resumed.
This plugin drives current Optuna (3 to 5) through its ask-and-tell interface instead: each
trial is asked for, run as a Hydra job by the configured launcher, and told its result.

Modules: :mod:`.config` (the config node, registered in Hydra's ConfigStore), :mod:`.sweeper`
(the search loop), ``_search_space`` (the ``params`` specification to Optuna distributions) and
``_results`` (``optimization_results.yaml``). Hydra imports every module of ``hydra_plugins`` at
start-up, except those whose names begin with one underscore, and this package imports Optuna
only once a search starts: a plain ``python train.py`` pays nothing for it.
"""
