"""The back-to-back user agent: calls, their legs, and the records they leave."""
