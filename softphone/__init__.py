"""A SIP soft phone (pjsua2) with a local HTTP API and web UI."""
