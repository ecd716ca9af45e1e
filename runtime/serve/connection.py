"""uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but restarts that timer
on every byte, and never closes a connection whose request headers are still arriving: a client
sending one header byte a second holds a connection (and a file descriptor) forever. Here every
connection must deliver a complete request line and headers within ``header_timeout_s`` of
opening, or of its previous response, whatever it trickles meanwhile; otherwise it is closed.
The body has its own deadline in the application (``Limits.body_timeout_s``).
"""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def protocol_with_header_deadline(header_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass (uvicorn's ``Config(http=...)``) closing connections whose
    request headers take longer than ``header_timeout_s``."""

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()  # no request has started: nothing to answer

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
