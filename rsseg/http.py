"""Plain HTTP(S) downloads within limits: a STAC item's JSON, and a raster from a server that
cannot answer the range requests GDAL's ``/vsicurl/`` reads with.

Both bodies come from a server someone else runs, so each has an overall time limit (not per
read: a server that sends one byte at a time must not hang predict), a size limit, and follows
redirects only to http(s) URLs (urllib would follow one to ``ftp://`` too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from rsseg.errors import InputRasterError


def is_http_url(source: str) -> bool:
    """Whether ``source`` is an ``http://`` or ``https://`` URL."""
    return urlsplit(source).scheme in ("http", "https")


def _opener(url: str, what: str):  # noqa: ANN202 - urllib's OpenerDirector
    class HttpOnly(HTTPRedirectHandler):
        """Refuses a redirect to anything but http(s), before it is followed."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's
            if not is_http_url(newurl):
                raise InputRasterError(f"cannot read {what} {url}: it redirects to {newurl}, which is not an "
                                       "http(s) URL")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return build_opener(HttpOnly)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MB" if nbytes >= 2**20 else f"{nbytes / 1024:,.0f} kB"


def fetch(url: str, sink: BinaryIO, *, timeout: float, max_bytes: int, what: str, too_large: str,
          if_whole: Callable[[int | None], None] | None = None) -> bool:
    """Write the body of ``url`` into ``sink`` within ``timeout`` seconds in all and at most
    ``max_bytes``. Errors name ``what`` was read (``STAC item``, ``input raster``); ``too_large``
    ends the message of a body over ``max_bytes``.

    ``if_whole``: ask for the first byte only (a range request). A server that answers it (206)
    supports ranges: nothing is written, False. One that ignores it sends the whole file (200):
    ``if_whole(its declared size)`` is called before it is written, True. One request either way.
    """
    deadline = time.monotonic() + timeout
    size = 0
    request = Request(url, headers={"Range": "bytes=0-0"} if if_whole is not None else {})
    with _opener(url, what).open(request, timeout=timeout) as response:
        if if_whole is not None and response.status == 206:
            return False
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared is not None and declared.isdigit() else None
        if declared is not None and declared > max_bytes:
            raise InputRasterError(f"cannot read {what} {url}: {_size(declared)}, larger than {_size(max_bytes)}; "
                                   f"{too_large}")
        if if_whole is not None:
            if_whole(declared)
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > max_bytes:
                raise InputRasterError(f"cannot read {what} {url}: larger than {_size(max_bytes)}; {too_large}")
            if time.monotonic() > deadline:
                raise InputRasterError(f"cannot read {what} {url}: it did not arrive within {timeout:g} s "
                                       "(the server is too slow or stalled); check the URL and the network")
            sink.write(chunk)
    return True
