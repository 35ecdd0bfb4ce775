"""Runners that turn training runs into the study's tables."""
