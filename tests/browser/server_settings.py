"""Settings of the daphne the browser tests start: the project's, plus test timings.

``NCP_TEST_SETTINGS`` holds a JSON object of Django settings (seconds-scale timeouts, in
minutes as the settings expect), so one real server can be started with the timings a
scenario needs without changing how production reads its environment.
"""

import json
import os

from ncp_asgi.settings import *  # noqa: F403

globals().update(json.loads(os.environ.get("NCP_TEST_SETTINGS", "{}")))
