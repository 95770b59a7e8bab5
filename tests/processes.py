"""Real processes for failure tests: a private Mosquitto that can be restarted, and a TCP
proxy that can cut the database off. Nothing here imitates a server; they stand between
real ones so a test can break the network or restart the broker without touching the
shared services."""

from __future__ import annotations

import contextlib
import getpass
import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class PrivateBroker:
    """A Mosquitto of the test's own, with persistence, on a fixed port across restarts.

    Mosquitto 2.0 persists by snapshot: on a clean stop, and every `autosave_interval_s`
    (its default is 30 minutes). A kill -9 loses what arrived since the last snapshot."""

    def __init__(self, workdir: Path, autosave_interval_s: int | None = None) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed")
        self.port = free_port()
        self.workdir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Run as whoever runs the tests: as root, Mosquitto would otherwise switch to
            # the mosquitto user and fail to write persistence into the test's directory.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
            + (f"autosave_interval {autosave_interval_s}\n" if autosave_interval_s else "")
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """A clean stop: Mosquitto writes its persistence file on SIGTERM."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def kill9(self) -> None:
        """SIGKILL: no snapshot is written, the broker keeps only its last one."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self, down_for_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for_s)
        self.start()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses
    new ones until `restore()` — a database outage as the client sees it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._listen()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        registered: dict[int, socket.socket] = {}
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
                pairs = list(self._pairs)
            wanted = {}
            if listener is not None:
                wanted[listener.fileno()] = listener
            for a, b in pairs:
                wanted[a.fileno()] = a
                wanted[b.fileno()] = b
            for fd in list(registered):
                if fd not in wanted or registered[fd] is not wanted[fd]:
                    try:
                        selector.unregister(registered.pop(fd))
                    except (KeyError, ValueError, OSError):
                        registered.pop(fd, None)
            for fd, sock in wanted.items():
                if fd not in registered and fd >= 0:
                    try:
                        selector.register(sock, selectors.EVENT_READ)
                        registered[fd] = sock
                    except (ValueError, OSError):
                        pass
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                if sock is listener:
                    self._accept(listener)
                else:
                    self._pump(sock)
        selector.close()

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._pairs.append((client, upstream))

    def _pump(self, sock: socket.socket) -> None:
        with self._lock:
            pair = next((p for p in self._pairs if sock in p), None)
        if pair is None:
            return
        other = pair[1] if sock is pair[0] else pair[0]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        self._close_pair(pair)

    def _close_pair(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            listener.close()
        for pair in pairs:
            self._pairs.append(pair)
            self._close_pair(pair)

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listen()

    def stop(self) -> None:
        self.cut()
        self._stopping.set()
        if self._thread:
            self._thread.join(5)


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a `python -m cli ...` child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(overrides)
    return env


class PrivatePostgres:
    """A PostgreSQL server of the test's own: initdb into a temporary directory, a free
    port, started and stopped with pg_ctl, so a test can kill -9 or restart it (the shared
    server is never touched). As root, the server runs as the ``postgres`` OS user
    (initdb and postgres refuse to run as root).

    With `small_tablespace_mb`, the server runs in a mount namespace of its own holding a
    tmpfs of that size at `tablespace_dir`: a disk that fills up, visible to nothing else
    on the machine and gone with the server.
    """

    def __init__(self, small_tablespace_mb: int = 0) -> None:
        self.bin = Path(os.environ.get("IOT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
        if not (self.bin / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL binaries in {self.bin} (IOT_TEST_PG_BIN)")
        self.root = Path(tempfile.mkdtemp(prefix="iot-test-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.tablespace_dir = self.root / "small"
        self.small_tablespace_mb = small_tablespace_mb
        self.port = free_port()
        self._owner = "postgres" if os.geteuid() == 0 else None
        if self._owner:
            shutil.chown(self.root, self._owner, self._owner)

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self._owner, "--", *args] if self._owner else args

    def _run(self, args: list[str], timeout: float = 120) -> None:
        result = subprocess.run(
            self._as_owner(args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}{self.log_tail()}")

    def init(self) -> None:
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 40\n"
                "shared_buffers = 32MB\n"
                # A crash must be recovered from the WAL, as in production.
                "fsync = on\n"
                "synchronous_commit = on\n"
            )
        if self.small_tablespace_mb:
            self.tablespace_dir.mkdir()
            if self._owner:
                shutil.chown(self.tablespace_dir, self._owner, self._owner)

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]

    def start(self) -> None:
        command = self._pg_ctl("-w", "-t", "60", "start")
        if not self.small_tablespace_mb:
            self._run(command)
        else:
            owner = f",uid={self._owner},gid={self._owner}" if self._owner else ""
            mount = (
                f"mount -t tmpfs -o size={self.small_tablespace_mb}m,mode=0700{owner} "
                f"iot-test-small {self.tablespace_dir}"
            )
            script = f"{mount} && exec {' '.join(self._as_owner(command))}"
            result = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"could not start in a mount namespace: {result.stderr}")
        wait_for_port(self.port, 30)

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def _children(self, pid: int) -> list[int]:
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry.name))
        return children

    def kill9(self) -> None:
        """SIGKILL the postmaster, as the OOM killer would; its backends notice and exit,
        and the next start runs crash recovery from the WAL."""
        pid = self.pid
        children = self._children(pid)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in [pid, *children]):
            time.sleep(0.05)
        for leftover in [p for p in children if _alive(p)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        # The dead postmaster is reaped by whoever adopted it (pid 1 here, which may take
        # its time); until then its pid exists and the new postmaster would take the lock
        # file for a running server's. A lock file of a dead process is stale.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists() and not _alive(pid):
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart_fast(self) -> None:
        """`pg_ctl restart -m fast`: clients are disconnected, a checkpoint, a new server."""
        self._run(self._pg_ctl("-w", "-t", "60", "-m", "fast", "restart"))
        wait_for_port(self.port, 30)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(
                self._as_owner([*self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop")]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        with contextlib.suppress(Exception):
            os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
