"""Fetch an HTTPS source to a local file, with a stall timeout, a deadline and bounded retries.

The Airbyte File source has no read timeout: a server that sends part of a file and then
goes silent hangs the connector until someone kills it. So mlstack downloads the file
itself (streamed to disk, never whole in memory) and the connector reads the local copy.
Two bounds: no bytes for `timeout` seconds is a stall; and the whole download, retries
included, ends within `deadline` seconds (a server trickling one byte every few seconds
never stalls, and would otherwise keep the run going for ever).

What is retried, and why:
- connection refused or reset, a connection broken mid-transfer, a connect timeout, and
  HTTP 5xx / 429: the network or the server had a bad moment; asking again can succeed.
- not a stall (the server answered, then sent nothing for `timeout` seconds): retrying
  would multiply the promised bound (`MLSTACK_SOURCE_TIMEOUT_SECONDS`) by the number of
  attempts, and a server that stops mid-file for that long is broken, not flaky.
- never a 4xx (a 404 stays a 404), a TLS certificate error, or anything about the content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from threading import Event

import requests
import urllib3.exceptions

from mlstack_assets.ingestion.sources import SourceError, SourceSpec, require_https

CHUNK = 1 << 20
BACKOFF_SECONDS = 1.0  # first retry after 1 s, then 2, 4, ... (capped)
BACKOFF_CAP_SECONDS = 30.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def backoff_seconds(attempt: int) -> float:
    """How long to wait before retry `attempt + 1`: 1 s, then 2, 4, ... capped."""
    return min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS)


def transient_status(status: int) -> bool:
    return status in RETRIED_STATUSES


class _Transient(Exception):
    """A failure worth another attempt; `str()` says what happened."""


def _kind(error: BaseException) -> str:
    """ "stall", "tls", "transient" or "other", however requests/urllib3 wrapped it."""
    cause = error.args[0] if isinstance(error, requests.RequestException) and error.args else None
    if isinstance(error, requests.ReadTimeout | urllib3.exceptions.ReadTimeoutError) or (
        isinstance(cause, urllib3.exceptions.ReadTimeoutError)
    ):
        return "stall"
    if isinstance(error, requests.exceptions.SSLError | urllib3.exceptions.SSLError):
        return "tls"
    if isinstance(
        error,
        requests.ConnectionError  # refused, reset, DNS, connect timeout
        | requests.exceptions.ChunkedEncodingError  # the connection broke mid-body
        | urllib3.exceptions.ProtocolError  # the same, from the raw reads
        | urllib3.exceptions.NewConnectionError,
    ):
        return "transient"
    return "other"


def _reason(error: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, short."""
    text = str(error)
    if "Caused by " in text:
        text = text.split("Caused by ", 1)[-1].rstrip(")")
    if "IncompleteRead" in text:
        text = "the connection closed before the whole body arrived"
    return text if len(text) <= 200 else text[:200] + "..."


class _Clock:
    """The download's deadline, shared by its attempts."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self, spec: SourceSpec, received: int) -> None:
        elapsed = self.elapsed
        if elapsed <= self.deadline:
            return
        rate = received / elapsed if elapsed else 0.0
        raise SourceError(
            spec,
            f"the download did not finish within {self.deadline:g} s"
            f" (MLSTACK_SOURCE_DEADLINE_SECONDS): {received:,} bytes received in"
            f" {elapsed:.0f} s, {_rate(rate)}",
        )


def _rate(bytes_per_second: float) -> str:
    for unit, size in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_second >= size:
            return f"{bytes_per_second / size:.1f} {unit}"
    return f"{bytes_per_second:.1f} bytes/s"


def _get(spec: SourceSpec, destination: Path, timeout: float, clock: _Clock, stopped: Event) -> int:
    """One attempt: stream the body to `destination`; return the byte count."""
    received = 0
    try:
        with requests.get(spec.url, stream=True, timeout=(timeout, timeout)) as response:
            if transient_status(response.status_code):
                raise _Transient(f"HTTP {response.status_code} {response.reason}")
            if response.status_code != 200:
                raise SourceError(spec, f"HTTP {response.status_code} {response.reason}")
            with destination.open("wb") as out:
                # read1: whatever has arrived (up to CHUNK), so `received` is exact when a
                # read stalls or breaks; decoded as requests would (gzip transfer encoding)
                while chunk := response.raw.read1(CHUNK, decode_content=True):
                    out.write(chunk)
                    received += len(chunk)
                    clock.check(spec, received)
                    if stopped.is_set():
                        raise SourceError(spec, f"stopped after {received:,} bytes")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        kind = _kind(error)
        where = f"after {received:,} bytes" if received else "before the first byte"
        if kind == "stall":
            raise SourceError(
                spec,
                f"the server stopped sending data: no bytes for {timeout:g} s {where}"
                f" (MLSTACK_SOURCE_TIMEOUT_SECONDS={timeout:g})",
            ) from None
        if kind == "tls":
            raise SourceError(spec, f"TLS error: {_reason(error)}") from None
        if kind == "transient":
            raise _Transient(f"{type(error).__name__} {where}: {_reason(error)}") from None
        raise SourceError(spec, f"unreachable: {type(error).__name__}: {_reason(error)}") from None
    return received


def download(
    spec: SourceSpec,
    destination: Path,
    timeout: float,
    retries: int,
    log: Callable[[str], None],
    deadline: float = 1800.0,
    stopped: Event | None = None,
) -> int:
    """Download an HTTPS source to `destination`; return its size in bytes.

    Raises `SourceError` naming the source on a stall, past the deadline, on a
    non-retryable status, or when the transient failures outlast `retries` retries (each
    one logged through `log`); and soon after `stopped` is set (the step stopped).
    """
    require_https(spec)
    clock = _Clock(deadline)
    stopped = stopped or Event()
    for attempt in range(retries + 1):
        try:
            return _get(spec, destination, timeout, clock, stopped)
        except _Transient as failure:
            if attempt == retries:
                tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                raise SourceError(spec, f"unreachable after {tries}: {failure}") from None
            delay = backoff_seconds(attempt)
            if clock.elapsed + delay > deadline:
                raise SourceError(
                    spec,
                    f"unreachable: {failure}; no time left for another attempt within"
                    f" {deadline:g} s (MLSTACK_SOURCE_DEADLINE_SECONDS)",
                ) from None
            log(
                f"source '{spec.name}' ({spec.url}): {failure}; retry {attempt + 1} of"
                f" {retries} in {delay:g} s"
            )
            if stopped.wait(delay):
                raise SourceError(spec, "stopped while waiting to retry") from None
    raise AssertionError("unreachable")  # the loop returns or raises
