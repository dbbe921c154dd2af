"""A warm launcher for vLLM servers: one process per user, checkout and preloaded environment that has
imported vLLM's server once and forks a server per request, so a server answers /health ~10 s sooner
than one started as a fresh Python process (most of a CPU start is importing vLLM: bench/engine_start.py).

    pid = launch(server_args, env, log_path)   # started on first use; then a fork per call

`launch` connects to the launcher's Unix socket (in a directory only this user can open), starting the
launcher when none answers; the launcher forks a child that leads a session of its own, writes to
`log_path`, takes the request's environment and working directory, and runs
`service.engine.vllm_main` with the request's arguments. The server is the launcher's child, not the
caller's: the caller follows it with `LaunchedProcess` (poll, wait, the exit code the launcher appends
to the log) and stops its process group as it would its own child's. The launcher reaps its children
and exits after `IDLE_S` without a request or a live server.

What a fork cannot change is keyed instead: variables read when libraries load (LD_PRELOAD, the OpenMP
thread count) are part of the launcher's identity, so a request with other values gets a launcher of
its own. Only CPU builds use it (service/engine/server.py, `vllm.warm_start`): the launcher has run no
torch work when it forks, but on a GPU host it has not been measured.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from service.core.procs import log_tail

IDLE_S = 300.0  # an idle launcher exits; the next start pays the import once more
KEYED = ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH")  # fixed once loaded
EXIT_LINE = "rankloop launcher: the server exited with code "
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout whose vllm_main the launcher runs
MAX_SOCKET_PATH = 100  # Linux allows 107 bytes in a Unix socket's path


class LaunchError(RuntimeError):
    """The launcher could not be reached or started, or refused the request."""


def launcher_dir() -> Path:
    """This user's private directory for launcher sockets: in XDG_RUNTIME_DIR when it is a writable directory
    and a socket path there fits the ~108 bytes Unix sockets allow, else in the temporary directory."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    fits = len(str(base / f"rankloop-{os.getuid()}" / "vllm-0123456789abcdef.partial")) <= MAX_SOCKET_PATH
    if not (fits and base.is_dir() and os.access(base, os.W_OK)):
        base = Path(tempfile.gettempdir())
    path = base / f"rankloop-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
        raise LaunchError(f"{path} must belong to this user and be private (mode 700)")
    return path


def launcher_key(env: dict[str, str]) -> str:
    fixed = [sys.executable, str(PACKAGE_ROOT), *(env.get(k, "") for k in KEYED)]
    return hashlib.sha256(json.dumps(fixed).encode()).hexdigest()[:16]


def launch(args: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 120.0) -> int:
    """Fork a `service.engine.vllm_main` server with `args` and `env`, logging to `log_path`; its pid."""
    key = launcher_key(env)
    sock_path = launcher_dir() / f"vllm-{key}.sock"
    request = {"args": args, "env": env, "log": str(log_path), "cwd": os.getcwd()}
    try:
        return _ask(sock_path, request)
    except (FileNotFoundError, ConnectionError):  # none yet, or one that died or was leaving
        pass
    with open(launcher_dir() / f"vllm-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter: the others wait here, then find it listening
        try:
            return _ask(sock_path, request)
        except (FileNotFoundError, ConnectionError):
            pass
        sock_path.unlink(missing_ok=True)  # a launcher that died leaves its socket file
        log = launcher_dir() / f"vllm-{key}.log"
        with open(log, "ab") as out:
            starter = subprocess.Popen(
                [sys.executable, "-m", "service.engine.launcher", str(sock_path)],
                cwd=PACKAGE_ROOT,
                env={k: v for k, v in env.items() if k != "VLLM_API_KEY"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not sock_path.exists():  # bound once vLLM is imported
            if starter.poll() is not None or time.monotonic() > deadline:
                raise LaunchError(f"the vLLM launcher did not start; its log ({log}) ends:\n{log_tail(log)}")
            time.sleep(0.1)
    return _ask(sock_path, request)


def _ask(sock_path: Path, request: dict) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(sock_path))
        s.sendall(json.dumps(request).encode() + b"\n")
        line = s.makefile().readline()
    if not line:  # it closed without answering: it was exiting when this connected
        raise ConnectionResetError("the vLLM launcher closed the connection")
    answer = json.loads(line)
    if "pid" not in answer:
        raise LaunchError(f"the vLLM launcher refused the request: {answer.get('error', answer)}")
    return int(answer["pid"])


class LaunchedProcess:
    """A launched server, followed like a `subprocess.Popen` of one's own (it is the launcher's child)."""

    def __init__(self, pid: int, log_path: Path):
        self.pid, self.log_path = pid, log_path
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _running(self.pid):
            self.returncode = self._exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.1)
        return code

    def _exit_code(self) -> int:
        """What the launcher wrote when it reaped the server (it reaps within a second); -9 if unknown."""
        for _ in range(20):
            found = re.findall(re.escape(EXIT_LINE) + r"(-?\d+)", log_tail(self.log_path, 5))
            if found:
                return int(found[-1])
            time.sleep(0.1)
        return -9


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has exited
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# ---- the launcher process --------------------------------------------------------------------------


def serve(sock_path: Path) -> None:
    started_env = dict(os.environ)
    from service.engine import vllm_main

    vllm_main.preload()
    # What importing vLLM set in the environment (its own overrides) goes to every server too.
    added = {k: v for k, v in os.environ.items() if started_env.get(k) != v}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = sock_path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    listener.bind(str(partial))
    listener.listen(16)
    os.replace(partial, sock_path)  # appears only once it accepts
    children: dict[int, str] = {}
    last = time.monotonic()
    print(f"rankloop launcher {os.getpid()}: vLLM loaded, listening on {sock_path}", flush=True)
    while children or time.monotonic() - last < IDLE_S:
        _reap(children)
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        conn, _ = listener.accept()
        last = time.monotonic()
        with conn:
            try:
                request = json.loads(conn.makefile().readline())
                ready, led = os.pipe()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    os.close(ready)
                    _child(conn, led, request, added)  # never returns
                os.close(led)
                os.read(ready, 1)  # EOF once the child leads its group: the caller may signal it then
                os.close(ready)
                children[pid] = request["log"]
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except Exception as e:  # a bad request fails that request, not the launcher
                conn.sendall(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
    if sock_path.exists() and sock_path.stat().st_ino == os.fstat(listener.fileno()).st_ino:
        sock_path.unlink()
    print(f"rankloop launcher {os.getpid()}: idle for {IDLE_S:.0f} s, exiting", flush=True)


def _reap(children: dict[int, str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        log = children.pop(pid, None)
        if log is not None:
            with open(log, "a") as f:
                f.write(f"\n{EXIT_LINE}{os.waitstatus_to_exitcode(status)}\n")


def _child(conn: socket.socket, led: int, request: dict, added: dict[str, str]) -> None:
    code = 1
    try:
        conn.close()
        os.setsid()  # its own process group: stopping it ends its engine core too
        os.close(led)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(request["cwd"])
        from setproctitle import setproctitle

        from service.engine import vllm_main

        # What `ps` shows, as if started directly (the launcher's own command line otherwise). Before the
        # environment changes: setproctitle finds the command line's memory through it.
        setproctitle(" ".join([sys.executable, "-m", "service.engine.vllm_main", *request["args"]]))
        os.environ.clear()
        os.environ.update({**request["env"], **added})
        sys.argv = ["service.engine.vllm_main", *request["args"]]
        vllm_main.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
