"""Run baresip 1.0 headless as a phone for integration tests (its own config directory)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from cms_process import wait_until

BARESIP = shutil.which("baresip")
MODULE_PATH = Path("/usr/lib/baresip/modules")


def available(*modules: str) -> bool:
    """True when baresip and these modules (e.g. "g711", "ausine") are installed."""
    return BARESIP is not None and all((MODULE_PATH / f"{m}.so").exists()
                                       for m in ("account", *modules))


def config_text(tone_hz: int | None = None) -> str:
    """A headless config: no stdio/menu, G.711, and with `tone_hz` a sine as the microphone.

    ausine only makes 48 kHz stereo; baresip resamples it to the codec's 8 kHz mono.
    There is no audio player: what baresip receives is decoded and dropped.
    """
    lines = [
        "poll_method\t\tepoll",
        "sip_listen\t\t127.0.0.1:0",
        "net_interface\t\t127.0.0.1",
        f"module_path\t\t{MODULE_PATH}",
        "module\t\t\tg711.so",
        "module_tmp\t\taccount.so",
    ]
    if tone_hz is not None:
        lines += [
            "module\t\t\tausine.so",
            f"audio_source\t\tausine,{tone_hz}",
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
        ]
    return "\n".join(lines) + "\n"


class Baresip:
    """A baresip process with one account; its output is collected by a thread."""

    def __init__(self, directory: Path, account: str, config: str | None = None) -> None:
        directory.mkdir(parents=True)
        (directory / "config").write_text(config or config_text())
        (directory / "accounts").write_text(account + "\n")
        (directory / "contacts").write_text("")
        assert BARESIP is not None
        self.proc = subprocess.Popen(
            [BARESIP, "-f", str(directory)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until baresip printed a line containing `text`."""
        return wait_until(lambda: any(text in line for line in self.lines), timeout)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (baresip's clean quit), then SIGKILL the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code
