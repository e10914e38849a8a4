"""The collector's HTTP API: OTLP ingest, health, projects, and the read side."""
