"""The forked processes of :mod:`tests.cli_processes` behave as fresh ones would: their
own exit status, streams, environment and folder; a traceback and status 1 for an
uncaught exception; a timeout kills them."""

import subprocess

import pytest

from tests.cli_processes import run_mmdtok, run_python


def test_a_forked_process_has_its_own_status_streams_environment_and_folder(tmp_path):
    done = run_python("import os, sys; print(os.getcwd(), os.environ['MINE'], sys.argv[1:]); "
                      "print('to stderr', file=sys.stderr); sys.exit(3)", "a", 7,
                      cwd=tmp_path, env={"MINE": "yes"})
    assert done.returncode == 3
    assert done.stdout == f"{tmp_path} yes ['a', '7']\n" and done.stderr == "to stderr\n"
    crashed = run_python("raise ValueError('boom')")
    assert crashed.returncode == 1 and "Traceback" in crashed.stderr
    assert crashed.stderr.rstrip().endswith("ValueError: boom")
    killed = run_python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -9
    with pytest.raises(subprocess.TimeoutExpired):
        run_python("import time; time.sleep(30)", timeout=0.5)
    assert run_python("pass").returncode == 0  # the server outlives a killed child


def test_the_command_line_runs_as_python_m_mmdtok_would():
    helped = run_mmdtok("--help")
    assert helped.returncode == 0 and "encode" in helped.stdout
    wrong = run_mmdtok("no-such-command")
    assert wrong.returncode == 2 and "no-such-command" in wrong.stderr
