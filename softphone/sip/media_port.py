"""The bridge between pjsua2's conference bridge and the audio engine (`AudioMediaPort`).

The bridge's clock (pjmedia's null sound device, one tick per 20 ms block) calls
`onFrameRequested` for microphone audio and `onFrameReceived` with what the calls send to
the speaker, on pjmedia's clock thread. Every connected call transmits into this port and
receives from it, so the bridge does the mixing when several calls are connected.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pjsua2 as pj

from softphone.audio.engine import AudioEngine
from softphone.sip.bytevector import FrameIO
from softphone.sip.guard import ErrorSink

log = logging.getLogger("softphone.sip.media")

REPORT_INTERVAL = 10.0  # at most one error report per this many seconds from the audio thread


class BridgePort(pj.AudioMediaPort):  # type: ignore[misc]
    """One conference-bridge port for the soft phone's microphone and speaker."""

    def __init__(self, engine: AudioEngine, sink: ErrorSink) -> None:
        super().__init__()
        self.engine = engine
        self._sink = sink
        self._frames = FrameIO(pj)
        self._silence = bytes(engine.format.block_bytes)
        self._errors = 0
        self._last_report = -REPORT_INTERVAL
        self.frames_in = 0
        self.frames_out = 0

    def create(self, name: str = "softphone") -> None:
        """Register the port with the bridge in the engine's format."""
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.engine.format.rate, 1,
                 self.engine.format.block_ms * 1000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame: Any) -> None:  # noqa: N802 - pjsua2's name
        try:
            try:
                data = self.engine.read()
                self.frames_out += 1
            except Exception as exc:
                self._failed("microphone", exc)
                data = self._silence
            self._frames.fill(frame, data)
        except BaseException:  # noqa: BLE001 - never unwind into pjmedia (see `destroy`)
            pass

    def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 - pjsua2's name
        try:
            try:
                if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size > 0:
                    data = self._frames.read(frame)
                else:
                    data = self._silence
                self.engine.write(data)
                self.frames_in += 1
            except Exception as exc:
                self._failed("speaker", exc)
        except BaseException:  # noqa: BLE001
            pass

    def destroy(self) -> None:
        """Take the port off the bridge now, while this object is whole.

        Left to the garbage collector, Python would clear the object's attributes first and
        run the C++ destructor (which takes the port off the bridge) after: in between, the
        bridge's clock thread could call back into a half-torn-down object.
        """
        self.__swig_destroy__(self)
        self.thisown = False

    def _failed(self, where: str, exc: BaseException) -> None:
        """Count every failure; report the first and then at most one per interval."""
        self._errors += 1
        now = time.monotonic()
        if now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            self._sink.report_error(f"audio {where} ({self._errors} failures so far)", exc)
