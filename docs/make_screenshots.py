"""Save the console's screenshots (case list and case page, phone 390x844 and desktop 1280x900)
and the dashboard's (desktop 1280 wide, full page) to docs/screenshots/, by running the browser
accessibility tests with PEERLINE_SCREENSHOTS=1.

    .venv/bin/python docs/make_screenshots.py

Needs what the browser tests need: the `playwright` package and Chromium at /usr/bin/chromium.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_console_browser.py::test_no_serious_or_critical_accessibility_violation",
         "tests/test_dashboard_browser.py::test_no_serious_or_critical_accessibility_violation_on_the_dashboard"]

if __name__ == "__main__":
    env = {**os.environ, "PEERLINE_SCREENSHOTS": "1"}
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *TESTS],
                           cwd=ROOT, env=env)
    print("Screenshots in", ROOT / "docs" / "screenshots" if code == 0 else "not made (see above)")
    sys.exit(code)
