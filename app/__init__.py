"""The application: what composes the stages into runs (run configs, the runner, sweeps, inference on new videos,
a store's status and its verification). It imports ``stages/``; no stage imports it."""
