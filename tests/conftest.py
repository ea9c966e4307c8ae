"""Test helpers shared by the test folders (``models``, the worker scripts) are importable from every folder."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
