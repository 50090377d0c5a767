"""One module per workload, W1 to W6, each with ``run(ctx) -> list[Measurement]``."""
