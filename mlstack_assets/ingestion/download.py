"""Fetch an HTTPS source to a local file, with a stall timeout, a low-speed limit, a deadline
and bounded retries.

The connector has no read timeout (a server silent mid-file hangs it), so the file is streamed
to disk here and the connector reads the copy. A server trickling a byte at a time never stalls:
like curl's --speed-limit / --speed-time, fewer than `MLSTACK_SOURCE_LOW_SPEED_BYTES_PER_SECOND`
over the last `MLSTACK_SOURCE_LOW_SPEED_SECONDS` fails it, and the deadline bounds all attempts.
Retried: refused, reset or broken connections and HTTP 5xx / 429; never a stall or a low speed
(a retry would multiply the wait), a 4xx or a TLS error.
"""

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from threading import Event

import requests
import urllib3.exceptions
from requests.exceptions import ChunkedEncodingError, ReadTimeout, RequestException, SSLError
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from mlstack_assets.ingestion.sources import SourceError, SourceSpec, require_https

CHUNK = 1 << 20
BACKOFF_SECONDS, BACKOFF_CAP_SECONDS = 1.0, 30.0  # retry after 1 s, then 2, 4, ... capped
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# refused, reset, DNS, a connect timeout; the connection broken mid-body (requests, raw reads)
_TRANSIENT = (requests.ConnectionError, ChunkedEncodingError, ProtocolError, NewConnectionError)


def backoff_seconds(attempt: int) -> float:
    """How long to wait before retry `attempt + 1`: 1 s, then 2, 4, ... capped."""
    return min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS)


def transient_status(status: int) -> bool:
    """Whether an HTTP status is worth a retry."""
    return status in RETRIED_STATUSES


def _rate(bytes_per_second: float) -> str:
    for unit, size in (("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_second >= size:
            return f"{bytes_per_second / size:.1f} {unit}"
    return f"{bytes_per_second:.1f} bytes/s"


def _check_speed(
    spec: SourceSpec,
    window: deque[tuple[float, int]],
    began: float,
    received: int,
    low_speed: tuple[int, float],
) -> None:
    """Fail if fewer than `limit` bytes/s arrived over the last `seconds` of this attempt.
    `window` holds (when, bytes so far) samples, `seconds / 20` apart, back to `seconds` ago."""
    limit, seconds = low_speed
    now = time.monotonic()
    while len(window) > 1 and window[1][0] <= now - seconds:
        window.popleft()
    since, base = window[0]
    if now - since >= seconds and received - base < limit * (now - since):
        rate = f"{_rate((received - base) / (now - since))} over the last {now - since:.1f} s"
        slow = f"{rate}, under the {_rate(limit)} required"
        names = f"MLSTACK_SOURCE_LOW_SPEED_BYTES_PER_SECOND={limit} over"
        names += f" MLSTACK_SOURCE_LOW_SPEED_SECONDS={seconds:g}"
        got = f"{received:,} bytes received in {now - began:.0f} s"
        raise SourceError(spec, f"the server sends too slowly: {slow} ({names}); {got}")
    if now - window[-1][0] >= seconds / 20:
        window.append((now, received))


def _get(
    spec: SourceSpec,
    path: Path,
    timeout: float,
    low_speed: tuple[int, float],
    start: float,
    deadline: float,
    stopped: Event,
) -> int | str:
    """One attempt: the byte count, or why it failed when another attempt may succeed."""
    received = 0
    try:
        with requests.get(spec.url, stream=True, timeout=(timeout, timeout)) as response:
            status = f"HTTP {response.status_code} {response.reason}"
            if transient_status(response.status_code):
                return status
            if response.status_code != 200:
                raise SourceError(spec, status)
            with path.open("wb") as out:
                began = time.monotonic()
                window = deque([(began, 0)])
                # read1: whatever has arrived (up to CHUNK), so `received` is exact when a
                # read stalls or breaks; decoded as requests would (gzip transfer encoding)
                while chunk := response.raw.read1(CHUNK, decode_content=True):
                    received += out.write(chunk)
                    if (elapsed := time.monotonic() - start) > deadline:
                        rate = _rate(received / elapsed if elapsed else 0.0)
                        got = f"{received:,} bytes received in {elapsed:.0f} s, {rate}"
                        within = f"within {deadline:g} s (MLSTACK_SOURCE_DEADLINE_SECONDS)"
                        raise SourceError(spec, f"the download did not finish {within}: {got}")
                    if stopped.is_set():
                        raise SourceError(spec, f"stopped after {received:,} bytes")
                    _check_speed(spec, window, began, received, low_speed)
    except (RequestException, urllib3.exceptions.HTTPError) as error:
        where = f"after {received:,} bytes" if received else "before the first byte"
        before, caused_by, after = str(error).partition("Caused by ")
        reason = after.rstrip(")") if caused_by else before
        if "IncompleteRead" in reason:
            reason = "the connection closed before the whole body arrived"
        reason = reason if len(reason) <= 200 else reason[:200] + "..."
        cause = error.args[0] if isinstance(error, RequestException) and error.args else None
        if isinstance(error, ReadTimeout | ReadTimeoutError) or isinstance(cause, ReadTimeoutError):
            seconds = f"{timeout:g}"
            silent = f"no bytes for {seconds} s {where} (MLSTACK_SOURCE_TIMEOUT_SECONDS={seconds})"
            raise SourceError(spec, f"the server stopped sending data: {silent}") from None
        if isinstance(error, SSLError | urllib3.exceptions.SSLError):
            raise SourceError(spec, f"TLS error: {reason}") from None
        if isinstance(error, _TRANSIENT):
            return f"{type(error).__name__} {where}: {reason}"
        raise SourceError(spec, f"unreachable: {type(error).__name__}: {reason}") from None
    return received


def download(
    spec: SourceSpec,
    destination: Path,
    timeout: float,
    retries: int,
    log: Callable[[str], None],
    deadline: float = 1800.0,
    stopped: Event | None = None,
    low_speed: tuple[int, float] = (1000, 60.0),
) -> int:
    """Download an HTTPS source to `destination`, return its size; `SourceError` on a stall, a
    `low_speed` (bytes/s, seconds), the deadline, a status not retried, `retries` retries spent
    (each logged) or `stopped` set."""
    require_https(spec)
    started, stopped = time.monotonic(), stopped or Event()
    for attempt in range(retries + 1):
        failure = _get(spec, destination, timeout, low_speed, started, deadline, stopped)
        if isinstance(failure, int):
            return failure
        if attempt == retries:
            tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
            raise SourceError(spec, f"unreachable after {tries}: {failure}")
        delay = backoff_seconds(attempt)
        if time.monotonic() - started + delay > deadline:
            no_time = f"{failure}; no time left for another attempt within {deadline:g} s"
            raise SourceError(spec, f"unreachable: {no_time} (MLSTACK_SOURCE_DEADLINE_SECONDS)")
        log(str(SourceError(spec, f"{failure}; retry {attempt + 1} of {retries} in {delay:g} s")))
        if stopped.wait(delay):
            raise SourceError(spec, "stopped while waiting to retry")
    raise AssertionError("unreachable")  # the loop returns or raises
