"""Unit tests that run a real Envoy share the through-Envoy helpers of tests/envoy_http.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
