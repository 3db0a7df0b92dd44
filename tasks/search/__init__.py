"""The search over settings: a grid of trials on the same stage functions, the Pareto front, the best trial."""
