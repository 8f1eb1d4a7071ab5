"""The firewatch suite's fixtures live in fw_support.py (helpers there are imported by the
tests); this file only makes them visible to pytest."""

from fw_support import (  # noqa: F401
    _crosstalk_window,
    crosstalk_canary,
    firewatch_log_dir,
    fw_containers,
    services,
    site_broker,
    site_monitor,
    start_pump,
)
