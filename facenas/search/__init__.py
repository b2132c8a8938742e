"""Multi-objective search: config, dispatch to objective services, Pareto evolution, outputs."""
