"""Benchmarks of ``node`` against torchdiffeq and torchode (``python -m bench.run_all``).

Modules:

* :mod:`bench.problems`: the test problems, defined once and shared by all libraries;
* :mod:`bench.libraries`: one adapter per library (how to call it, how to count its work);
* :mod:`bench.timing`: warm-up, repeated runs, median and interquartile range;
* :mod:`bench.report`: Markdown tables, targets, machine information;
* :mod:`bench.solver_overhead`: the forward-solve benchmark (cases a-d);
* :mod:`bench.run_all`: runs every suite and writes ``bench/README.md``.

A suite is a module with ``run(config: BenchConfig) -> SuiteResult``; list it in
``bench.run_all.SUITES`` (a missing module is skipped, so ``bench.gradients`` can be added later).
"""
