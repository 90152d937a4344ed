"""Bundle-specific helpers referenced from the configs (``scripts.data``)."""
