"""Runs the processing worker as a child of ``faultlens serve``.

Processing is CPU work in Python; in the server's own process it would take turns
with request handling on the interpreter lock, and every accepted request would wait
for it. As a child process it gets a core of its own. The child is started with the
server, restarted if it dies, stopped with the server, and told by the kernel to exit
if the server is killed outright, so a killed server never leaves a worker behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

from faultlens.config import Settings

log = logging.getLogger("faultlens.processing")

_PR_SET_PDEATHSIG = 1


class WorkerProcess:
    """A supervised ``faultlens worker`` child process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="faultlens-worker-watch", daemon=True
        )
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _spawn(self) -> None:
        command = [
            sys.executable,
            "-m",
            "faultlens",
            "worker",
            "--data-dir",
            str(self._settings.data_dir),
        ]
        env = {**os.environ, "FAULTLENS_SUPERVISOR_PID": str(os.getpid())}
        self._process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            log.error("worker process exited with %s; starting another", code)
            self._stopping.wait(1.0)
            if not self._stopping.is_set():
                self._spawn()


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to the child when the parent dies, even
    # by SIGKILL. Elsewhere the worker notices its parent is gone and stops itself.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()
