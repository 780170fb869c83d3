import subprocess
import sys

from grok_mini.cli import main


def test_info_grok1_prints_the_release_counts(capsys):
    assert main(["info", "--preset", "grok-1"]) == 0
    out = capsys.readouterr().out
    assert "315,684,820,992" in out
    assert "83,756,587,008" in out
    assert "296.38 GiB" in out  # int8 release weights
    assert "2.00 GiB" in out  # KV cache at 8,192 tokens


def test_unknown_preset_is_one_line_and_nonzero():
    result = subprocess.run([sys.executable, "-m", "grok_mini.cli", "info", "--preset", "nope"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown preset 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_generate_takes_the_checkpoint_as_option_or_argument_once(capsys):
    from tests.conftest import FIXTURE

    common = ["--config", str(FIXTURE / "config.json"), "--ids", "435,327,263", "--max-new-tokens", "3",
              "--dtype", "float32"]
    assert main(["generate", "--checkpoint", str(FIXTURE), *common]) == 0
    as_option = capsys.readouterr().out
    assert main(["generate", str(FIXTURE), *common]) == 0
    assert capsys.readouterr().out == as_option
    assert main(["generate", *common]) == 1
    assert "give the checkpoint folder once" in capsys.readouterr().err
