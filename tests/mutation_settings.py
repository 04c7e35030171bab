"""Test settings for a mutation run (``make mutation``): one test database per process.

mutmut runs every mutant in a process of its own; with a database file per process, two
workers (or a worker killed on a timeout) can never share, or leave behind, another's tables.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    _name = DATABASES["default"]["TEST"]["NAME"]
    DATABASES["default"]["TEST"]["NAME"] = _name.with_name(f"{_name.stem}-{os.getpid()}.sqlite3")
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_mutation_{os.getpid()}"}
