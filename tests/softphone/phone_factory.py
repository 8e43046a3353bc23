"""Starting soft phones for tests: profiles, tone files, several processes at once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from audio_analysis import RATE, TONE_A, TONE_AMPLITUDE, TONE_B, TONE_C, tail, tone_dbfs
from cms_process import DESK, user_password
from softphone_process import SoftphoneProcess, StartSoftphone

from softphone.audio.dsp import tone
from softphone.audio.wav import write_wav


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def profile_text(settings: Mapping[str, Any], accounts: Sequence[Mapping[str, Any]],
                 cms_api: Mapping[str, Any] | None = None) -> str:
    """A soft phone profile (sip_profiles/softphone*.toml format)."""
    lines = ["[softphone]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for account in accounts:
        lines += ["", "[[accounts]]"] + [f"{k} = {toml_value(v)}" for k, v in account.items()]
    if cms_api is not None:
        lines += ["", "[cms_api]"] + [f"{k} = {toml_value(v)}" for k, v in cms_api.items()]
    return "\n".join(lines) + "\n"


TONES = {"a": TONE_A, "b": TONE_B, "c": TONE_C}


def write_tones(directory: Path) -> dict[str, Path]:
    """a.wav (1000 Hz), b.wav (1500 Hz), c.wav (2000 Hz), 1 s each (the backend loops them)."""
    files = {}
    for name, frequency in TONES.items():
        path = directory / f"{name}.wav"
        if not path.exists():
            write_wav(path, tone(frequency, 1.0, RATE, TONE_AMPLITUDE), RATE)
        files[name] = path
    return files


class PhoneFactory:
    """Starts soft phones in one directory; `stop_all` stops them side by side.

    `factory(name, audio="null", accounts=(), env=None, ready=True, **settings)`: each phone
    gets its profile `<name>.toml`, its own data directory (call history) and, for
    `audio="wav"`, the input `<name>.wav` (a tone for a, b and c) and output `<name>-out.wav`.
    `ready=False` only launches the process: call `wait_ready()` on it (start several at once,
    or use `start_many`).
    `cms_api`: the profile's `[cms_api]` table (colleagues' presence from the CMS).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.phones: list[SoftphoneProcess] = []

    def __call__(self, name: str, audio: str = "null",
                 accounts: Sequence[Mapping[str, Any]] = (), env: dict[str, str] | None = None,
                 ready: bool = True, cms_api: Mapping[str, Any] | None = None,
                 **settings: Any) -> SoftphoneProcess:
        directory = self.directory
        if audio == "wav":
            write_tones(directory)
            audio = f"wav:{directory / (name + '.wav')}:{directory / (name + '-out.wav')}"
        settings.setdefault("history", str(directory / f"{name}-history.jsonl"))
        profile = directory / f"{name}.toml"
        profile.write_text(profile_text(settings, accounts, cms_api))
        phone = SoftphoneProcess(profile, audio, directory / f"{name}-home", env=env)
        self.phones.append(phone)
        return phone.start() if ready else phone.launch()

    def start_many(self, *names: str, **options: Any) -> tuple[SoftphoneProcess, ...]:
        """Phones `names` with the same options, started side by side; returns them ready."""
        phones = [self(name, ready=False, **options) for name in names]
        return tuple(phone.wait_ready() for phone in phones)

    def stop_all(self) -> None:
        """SIGTERM to all, then wait for each: every one must exit 0 without a traceback."""
        for phone in self.phones:
            phone.signal_stop()
        for phone in self.phones:
            phone.stop()
        for phone in self.phones:
            phone.check_clean_exit()


def output_of(phone: SoftphoneProcess) -> Path:
    """The output file of a "wav" phone (what it played)."""
    return Path(phone.audio.split(":")[2])


def heard_level(phone: SoftphoneProcess, frequency: float) -> float:
    """The level (dBFS) of `frequency` in the last 0.3 s a "wav" phone played; -120 if none."""
    samples, rate = tail(output_of(phone), 0.3)
    return tone_dbfs(samples, rate, frequency) if samples.size >= 0.3 * rate else -120.0


def registered_pair(start_cms: Callable[..., Any], start_softphone: StartSoftphone,
                    a_user: str = "agent0001") -> tuple[Any, SoftphoneProcess, SoftphoneProcess]:
    """A CMS and "wav" soft phones A (`a_user`, or DESK's user) and B (agent0002, 10002)
    registered to it."""
    cms = start_cms()
    phones = []
    for name, user in (("a", a_user), ("b", "agent0002")):
        password = DESK[2] if user == DESK[0] else user_password(user)
        account = {"name": "cms", "user": user, "password": password,
                   "registrar": cms.sip_target}
        phones.append(start_softphone(name, audio="wav", accounts=[account], ready=False))
    a, b = (phone.wait_ready() for phone in phones)
    a.wait_for_registration("registered")
    b.wait_for_registration("registered")
    return cms, a, b
