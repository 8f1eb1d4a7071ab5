"""Shared helpers for harness's own tests. Inner suites run through ``pytester``."""

from __future__ import annotations
