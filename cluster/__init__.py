"""Cluster helpers: submit kgc jobs to a Ray cluster (see cluster/README.md)."""
