"""The `softphone` command line (contract: DESIGN.md §5)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from softphone.cli import build_parser, desktop_browser_available, main


def test_run_accepts_the_contract_arguments() -> None:
    args = build_parser().parse_args(
        ["run", "--profile", "p.toml", "--http", "127.0.0.1:8080", "--audio", "wav:a.wav:b.wav"])

    assert (args.profile, args.http, args.audio) == (Path("p.toml"), "127.0.0.1:8080",
                                                     "wav:a.wav:b.wav")


@pytest.mark.parametrize("argv", [
    ["run", "--audio", "alsa"],
    ["run", "--audio", "wav:only-one.wav"],
    ["run", "--http", "8080"],
    ["run", "--http", "host:99999"],
])
def test_malformed_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: softphone" in capsys.readouterr().err


def test_a_broken_profile_exits_2_with_the_reason(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('[softphone]\naudio = "alsa"\n')

    assert main(["run", "--profile", str(profile)]) == 2
    assert "p.toml" in capsys.readouterr().err


def test_help_lists_run_and_its_options() -> None:
    result = subprocess.run([sys.executable, "-m", "softphone", "run", "--help"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    for option in ("--profile", "--http", "--audio"):
        assert option in result.stdout


def test_a_browser_is_opened_only_on_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not desktop_browser_available()
    monkeypatch.setenv("DISPLAY", ":0")
    assert desktop_browser_available()


def test_a_sip_address_in_use_exits_1_with_the_reason(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "softphone", "run", "--audio", "null", "--no-browser",
             "--sip", f"127.0.0.1:{port}", "--http", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
        )

    assert result.returncode == 1
    assert "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
