"""The soft phone's local HTTP API (`/api/v1`, DESIGN.md §5) and its web UI at `/`."""
