"""baresip 1.0 as a real SIP peer for the soft phone: it answers by itself, echoes what it
hears (aubridge loops its player into its source) and dumps both directions to WAV
files (sndfile); `ctrl_tcp` lets a test make it dial."""

from __future__ import annotations

import json
import shutil
import socket
import struct
from pathlib import Path

import numpy as np
from audio_analysis import tone_dbfs
from baresip_runner import Baresip
from cms_process import free_port

BARESIP = shutil.which("baresip")
MODULE_PATH = Path("/usr/lib/baresip/modules")
AVAILABLE = BARESIP is not None and (MODULE_PATH / "aubridge.so").exists()


def _config(sip_port: int, ctrl_port: int, dump: Path) -> str:
    return f"""\
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
net_interface		127.0.0.1
module_path		{MODULE_PATH}
audio_player		aubridge,echo
audio_source		aubridge,echo
audio_alert		aubridge,alert
module			g711.so
module			aubridge.so
module			sndfile.so
snd_path		{dump}
module			menu.so
ringback_disabled	yes
module			ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
module_tmp		account.so
"""


def _port_pair() -> int:
    """A port P with P and P + 1 both free (UDP and TCP)."""
    for _ in range(100):
        port = free_port()
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports")


class BaresipPeer(Baresip):
    """A baresip process without registration, listening on loopback."""

    def __init__(self, directory: Path, user: str = "bob") -> None:
        assert BARESIP is not None
        # Outside `directory`, which the base class creates itself.
        self.dump = directory.with_name(directory.name + "-dump")
        self.dump.mkdir(parents=True)
        self.sip_port = _port_pair()  # baresip also listens for SIP/TLS on port + 1
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        while self.ctrl_port in (self.sip_port, self.sip_port + 1):
            self.ctrl_port = free_port(socket.SOCK_STREAM)
        self.uri = f"sip:{user}@127.0.0.1:{self.sip_port}"
        super().__init__(directory, f"<{self.uri}>;regint=0;answermode=auto",
                         _config(self.sip_port, self.ctrl_port, self.dump))

    def ready(self) -> bool:
        return any("baresip is ready" in line for line in self.lines)

    def command(self, command: str, params: str = "") -> None:
        """Send one ctrl_tcp command (a JSON netstring)."""
        payload = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5) as conn:
            conn.sendall(str(len(payload)).encode() + b":" + payload + b",")
            conn.settimeout(2)
            try:
                conn.recv(4096)  # the response; its content does not matter here
            except TimeoutError:
                pass

    def decoded_dump(self) -> Path | None:
        """The WAV file of what baresip received (its decoder's output)."""
        files = sorted(self.dump.glob("dump-*-dec.wav"))
        return files[-1] if files else None

    def heard(self, frequency: float, seconds: float = 0.4) -> float:
        """Level (dBFS) of `frequency` in the last `seconds` baresip decoded in its latest call."""
        dump = self.decoded_dump()
        if dump is None:
            return -120.0
        data = dump.read_bytes()
        if len(data) < 44:
            return -120.0
        # libsndfile completes the header when the call ends: read the fmt fields directly
        channels, rate = struct.unpack_from("<HI", data, 22)
        raw = data[44:]
        raw = raw[: len(raw) - len(raw) % (2 * channels)]
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
        samples = samples.reshape(-1, channels)[:, 0][-int(seconds * rate):]
        return tone_dbfs(samples, rate, frequency)

    def terminate(self, timeout: float = 10.0) -> int:
        """Hang up what is still going on, then quit as the base class does."""
        if self.proc.poll() is None:
            try:
                self.command("hangup")
            except OSError:
                pass
        return super().terminate(timeout)
