"""The synthetic-shapes benchmark's evaluators: exact scene labels (`labels`), the scene reader (`reader`) and
their cache (`cache`)."""
