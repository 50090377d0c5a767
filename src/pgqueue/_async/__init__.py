"""The hand-written async source of the parts that have a blocking twin in ``_sync``."""
