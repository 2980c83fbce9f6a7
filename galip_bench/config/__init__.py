"""Configuration: the schemas (`schema`), reading and merging YAML and dotlists (`io`), what follows from other
settings (`resolve`), bench.yaml (`site`), profiles (`profiles`) and model sections (`model`)."""
