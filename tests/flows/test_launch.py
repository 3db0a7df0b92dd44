"""launch: --dask-address is a Dask scheduler, or one line in seconds, whatever listens there."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flows.launch import check_dask
from tasks.errors import EdgecompressError


def listener(serve: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that runs `serve` on each connection; its tcp:// address."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    server.close()


def silent(conn: socket.socket) -> None:
    """Like a dashboard's HTTP port: waits for a request that Dask's bytes never complete."""
    time.sleep(60)
    conn.close()


def talkative(conn: socket.socket) -> None:
    """Answers whatever arrives in another protocol, as an HTTP server does."""
    with conn:
        try:
            conn.settimeout(30)
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.recv(1024)
        except OSError:
            pass


@pytest.fixture
def silent_peer() -> Iterator[str]:
    yield from listener(silent)


@pytest.fixture
def talkative_peer() -> Iterator[str]:
    yield from listener(talkative)


def checked_within(address: str, seconds: float) -> BaseException | None:
    """What check_dask raised, failing the test if it took longer than `seconds` (it hung)."""
    raised: list[BaseException] = []

    def call() -> None:
        try:
            check_dask(address)
        except BaseException as error:  # what it raised is the result
            raised.append(error)

    thread = threading.Thread(target=call, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"check_dask({address}) still waiting after {seconds} s"
    assert time.perf_counter() - started < seconds
    return raised[0] if raised else None


@pytest.mark.parametrize("peer", ["silent_peer", "talkative_peer"])
def test_a_port_where_no_scheduler_listens_is_one_line_promptly(peer: str, request: pytest.FixtureRequest) -> None:
    # Before: a silent peer kept the sweep waiting with no word; a talkative one, a 3 EiB MemoryError traceback.
    address = request.getfixturevalue(peer)
    error = checked_within(address, 20)
    assert isinstance(error, EdgecompressError), repr(error)
    assert str(error).startswith(f"--dask-address {address}: no Dask scheduler answers (")
    assert "\n" not in str(error)


def test_a_real_scheduler_passes() -> None:
    from distributed import LocalCluster

    scheduler = {"protocol": "tcp://", "host": "127.0.0.1", "dashboard_address": None}
    with LocalCluster(n_workers=0, processes=False, **scheduler) as cluster:
        assert checked_within(cluster.scheduler_address, 30) is None
