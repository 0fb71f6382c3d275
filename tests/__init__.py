"""The test suite: the solver's tests (tests/node/) and the training app's (tests/app/)."""
