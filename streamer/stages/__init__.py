"""Synchronous pipeline stages: push / flush / reset, each declaring the delay it adds."""
