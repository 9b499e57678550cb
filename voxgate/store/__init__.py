"""Persistence: tables, migrations and repository functions. Nothing else in voxgate writes SQL."""
