"""Helpers of the phantom_volume_cluscam bundle, referenced from its configs (``scripts.data``)."""
