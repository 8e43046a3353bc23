"""The SIP user agent: pjsua2 driven from one dedicated thread, events handed to asyncio."""
