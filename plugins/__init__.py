"""Built-in workloads: trainers, embedders, retrievers, exporters and data sources."""
