"""Fuzz tests: every feed parser, the ingest stage, replay readers and HTTP body parsing under
at least 10,000 generated inputs each (see docs/fuzzing.md)."""
