"""Suite-wide settings.

Hypothesis explores new random examples on every developer run; under CI (``CI`` set, as
.ci/run is) it is derandomized, so a landing is never decided by a lucky draw. What a
developer's run finds goes into the test as an ``@example``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
