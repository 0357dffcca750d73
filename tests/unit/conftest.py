"""Hypothesis settings for the whole suite.

Locally, examples are random (new ones every run, which is how properties find bugs). Under CI
(`CI` set, as `.ci/run` runs) the examples are derandomized: the same ones every run, so a run
cannot fail on a draw the previous one never made; bugs found locally become explicit tests.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
