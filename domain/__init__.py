"""The domain every process shares: the metric vocabulary, device models and their payload
decoders, the municipality's sensors, sites and zones (the registry), and which
network-server applications belong to which municipality. Ingest, analytics, the API and
the CLI use it; it uses only models (docs/architecture.md)."""
