"""NGSI-LD read API over the public open data (docs/api.md)."""
