"""Built-in device backends, one module per family. Each is its own ``hwkit`` entry point."""
