"""Make digest authentication work with the OpenSSL that pjsua2's wheel bundles.

PJSIP 2.15 computes every digest (MD5 too) through OpenSSL's `EVP_get_digestbyname`. The
manylinux wheel of `pjsua2-python` 2.15.1 bundles OpenSSL 1.0.2, whose digest table is
empty until someone calls `OpenSSL_add_all_digests()` (PJSIP only does so when it opens a
TLS transport). Without it, every 401 challenge ends in PJ_ENOTSUP and no account ever
registers. OpenSSL 1.1 and later fill the table by themselves; then this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger("softphone.sip.openssl")


def _loaded_libcrypto() -> list[str]:
    """Paths of the libcrypto libraries mapped into this process (Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps.splitlines()
             if "libcrypto" in line and line.split()[-1].startswith("/")}
    return sorted(paths)


def ensure_digests() -> bool:
    """Register OpenSSL's digests if they are not; True when MD5 is available afterwards.

    Call after pjsua2's extension is loaded (any `pj.` attribute access loads it).
    """
    paths = _loaded_libcrypto()
    if not paths:
        return True  # not OpenSSL-based (or not Linux): nothing to do
    ok = True
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc)
            continue
        lookup = lib.EVP_get_digestbyname
        lookup.restype = ctypes.c_void_p
        lookup.argtypes = [ctypes.c_char_p]
        if lookup(b"MD5"):
            continue
        if hasattr(lib, "OpenSSL_add_all_digests"):
            lib.OpenSSL_add_all_digests()
            log.debug("registered OpenSSL digests in %s", path)
        if not lookup(b"MD5"):
            log.error("OpenSSL in %s has no MD5 digest: SIP authentication will fail", path)
            ok = False
    return ok
