"""Contract tests of the refresh locks against real lock servers."""
