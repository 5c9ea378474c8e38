"""The benchmark harness of `make bench`: four authorization configurations side by side."""
