"""OGC SensorThings API v1.1, read-only, over the public open data (docs/api.md)."""
