"""Benchmarks of ``node`` against torchdiffeq and torchode (``python -m bench.run_all``).

Modules:

* :mod:`bench.problems`: the test problems, defined once and shared by all libraries;
* :mod:`bench.libraries`: one adapter per library (how to call it, how to count its work);
* :mod:`bench.timing`: warm-up, repeated runs, median and interquartile range;
* :mod:`bench.report`: Markdown tables, targets, machine information;
* :mod:`bench.common`: the shared configuration and result types;
* :mod:`bench.solver_overhead`: the forward-solve benchmark (cases a-d);
* :mod:`bench.gradients`: forward plus backward in the three gradient modes (direct,
  checkpoint, adjoint with either norm) against torchdiffeq's ``odeint``/``odeint_adjoint``;
* :mod:`bench.run_all`: runs every suite and writes ``bench/README.md``.

A suite is a module with ``run(config: BenchConfig, log) -> SuiteResult``; list it in
``bench.run_all.SUITES``.
"""
