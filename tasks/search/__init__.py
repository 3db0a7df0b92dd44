"""The search: float models trained once each, trials on the stages, a grid or an Optuna study, the best trial."""
