"""Shared pieces of the launch/ scripts: the main command, dry-run printing, running.

Every launcher builds a list of commands (argv lists) and hands them to :class:`Runner`.
With ``--dry-run`` the runner prints each command on one line, shell-quoted (so the line
can be pasted into a shell and does exactly what the launcher would do) and runs nothing.
Tests run the launchers with ``--dry-run`` and check the printed lines, so the scripts
cannot silently go stale against ``mmrec_jax.main``'s flags.

This module is imported by the launchers as ``common`` (they put their own directory on
``sys.path``), so the scripts run from any working directory without installing
anything: ``python launch/tpu_vm.py ...``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where the launchers put the repository on remote machines (relative to $HOME).
REMOTE_DIR = "mmrec_jax"
# Paths never shipped to remote machines.
TAR_EXCLUDES = (".venv", ".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache", "launch/out")


def quote(argv: Sequence[str]) -> str:
  """One shell-quoted line for an argv list."""
  return " ".join(shlex.quote(str(a)) for a in argv)


def main_command(main_args: Sequence[str], python: str = ".venv/bin/python") -> list[str]:
  """``python -m mmrec_jax.main ARGS``; checks that --config is among ARGS.

  ``--workdir`` is required for training (the default mode) and optional for
  ``--mode=prepare``.
  """
  args = list(main_args)
  if args and args[0] == "--":
    args = args[1:]
  for a in args:
    if a in ("--config", "--workdir"):
      raise SystemExit(f"error: write {a}=VALUE (one argument) after `--`")
  if not any(a.startswith("--config=") for a in args):
    raise SystemExit(
      "error: the main command needs --config=... (after `--`), e.g. "
      "-- --config=experiments/ml25m.py --workdir=runs/ml25m"
    )
  train_mode = not any(a in ("--mode=prepare",) for a in args)
  if train_mode and not any(a.startswith("--workdir=") for a in args):
    raise SystemExit("error: the main command needs --workdir=DIR (after `--`)")
  return [python, "-m", "mmrec_jax.main", *args]


def flag_value(args: Sequence[str], name: str) -> str | None:
  """Value of the last ``--name=V`` in an argv list, else None."""
  value = None
  for a in args:
    if a.startswith(f"--{name}="):
      value = a.split("=", 1)[1]
  return value


def replace_flag(args: Sequence[str], name: str, value: str | None) -> list[str]:
  """``args`` with every ``--name=...`` replaced by one ``--name=value`` (if not None)."""
  out = [a for a in args if not a.startswith(f"--{name}=")]
  if value is not None:
    out.append(f"--{name}={value}")
  return out


def env_prefix(env: Mapping[str, str]) -> list[str]:
  """``env K=V ...`` (an argv prefix), so remote and printed commands carry the env."""
  return ["env", *[f"{k}={v}" for k, v in env.items()]] if env else []


def remote_shell(lines: Sequence[str]) -> str:
  """Joins shell lines into one ``--command`` string for ssh (stops at the first error)."""
  return "set -euo pipefail; " + "; ".join(lines)


class Runner:
  """Prints (``dry_run``) or runs commands one after the other; stops at a failure."""

  def __init__(self, dry_run: bool, out=None):
    self.dry_run = dry_run
    self.out = out or sys.stdout

  def run(self, argv: Sequence[str], check: bool = True) -> int:
    line = quote(argv)
    if self.dry_run:
      print(line, file=self.out, flush=True)
      return 0
    print(f"+ {line}", file=sys.stderr, flush=True)
    rc = subprocess.call(list(argv))
    if check and rc != 0:
      raise SystemExit(f"error: command failed with exit status {rc}: {line}")
    return rc


def add_common_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--dry-run",
    "--dry_run",
    dest="dry_run",
    action="store_true",
    help="print the commands (one per line, shell-quoted); run nothing",
  )


def split_main_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits ``launcher flags -- main flags``."""
  argv = list(argv)
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]
  return argv, []


def write_atomic(path: str | pathlib.Path, text: str) -> pathlib.Path:
  """Writes a generated file through a temp file + rename (never half-written)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)
  return path


def source_tarball_command(tarball: str) -> list[str]:
  """``tar`` of the local repository (without .venv/.git/runs) to ship to remote VMs."""
  cmd = ["tar", "-C", str(REPO_ROOT), "-czf", tarball]
  cmd += [f"--exclude={x}" for x in TAR_EXCLUDES]
  cmd.append(".")
  return cmd


def remote_install_lines(extra: str, python: str = "python3.11") -> list[str]:
  """The README's set-up, run on each remote machine after the tarball is copied.

  mmrec_jax needs Python >= 3.11; the Ubuntu 22.04 images of Cloud TPU VMs and GPU VMs
  ship 3.10, so the interpreter and its venv module come from apt first (a no-op when
  they are already installed).
  """
  return [
    f"command -v {python} >/dev/null && {python} -c 'import ensurepip' 2>/dev/null "
    f"|| (sudo apt-get update -q && sudo apt-get install -y -q {python} {python}-venv)",
    f"mkdir -p ~/{REMOTE_DIR}",
    f"tar -xzf ~/mmrec_jax_src.tgz -C ~/{REMOTE_DIR}",
    f"cd ~/{REMOTE_DIR}",
    f"{python} -m venv .venv",
    ".venv/bin/pip install -q --upgrade pip",
    f".venv/bin/pip install -q -e '.[{extra}]'",
  ]
