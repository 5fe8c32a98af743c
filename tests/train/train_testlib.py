"""Paths and config modules shared by the training tests."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO / 'configs') not in sys.path:
  sys.path.insert(0, str(REPO / 'configs'))
