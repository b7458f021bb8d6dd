"""A small SMPP 3.4 SMSC (server) for loopback tests and the demo.

Real enough to test an ESME against without mocks: it accepts bind_transmitter / _receiver /
_transceiver (checking system_id and password), answers enquire_link and unbind, takes
submit_sm, reassembles concatenated UCS-2 parts by their UDH reference (or SAR TLVs), stores
each complete message with its parts, sends delivery receipts back as deliver_sm (esm_class
0x04, per part, as carriers do) and can inject mobile-originated replies. For the unhappy
paths it can refuse the next submits with given statuses, refuse a fraction of them, delay its
responses, or stop answering altogether.

It is built on smpplib's PDU classes, which encode and parse both directions (a server needs
``*_resp`` and ``deliver_sm`` encoders and ``submit_sm`` / ``bind_*`` parsers, all present);
the framing and dispatch are the same helpers the SMPP provider uses.

Run alone (for ``onemap up`` or by hand)::

    ONEMAP_SMSC_PASSWORD=... python -m onemap.sinks.sms.smsc --port 2775 --system-id onemap \
        --outbox var/smsc-messages.jsonl

``--outbox`` appends each complete message as one JSON line (what the handset would show):
the demo's "phones". Replies can be injected from Python with :meth:`Smsc.send_mo`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import random
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from onemap.sinks.sms.roster import masked
from onemap.sinks.sms.smpp import (
    DATA_CODING_UCS2,
    ESM_RECEIPT,
    ESM_UDHI,
    ESME_RINVCMDID,
    ESME_ROK,
    SequenceNumbers,
    decode_text,
    make_pdu,
    parse_pdu,
    read_pdu_bytes,
    response_for,
    status_name,
)

log = logging.getLogger(__name__)

ESME_RALYBND = 0x05
ESME_RINVBNDSTS = 0x04
ESME_RINVDSTADR = 0x0B
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RTHROTTLED = 0x58
ESME_RSYSERR = 0x08
BIND_MODES = {"bind_transmitter": "transmitter", "bind_receiver": "receiver",
              "bind_transceiver": "transceiver"}
RECEIPT_STATES = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
                  "UNKNOWN": 7, "REJECTD": 8}


@dataclasses.dataclass
class Submit:
    """One submit_sm as received (every one, accepted or not): for "sent exactly once" checks."""

    destination: str
    text: str
    reference: int | None
    part: int
    parts: int
    status: int
    message_id: str


@dataclasses.dataclass
class StoredMessage:
    """A complete message: all its parts arrived (single messages have one part)."""

    system_id: str
    source_addr: str
    destination: str
    text: str
    parts: list[str]
    message_ids: list[str]
    data_coding: int
    esm_class: int
    registered_delivery: int
    reference: int | None
    received_at: datetime

    def __repr__(self) -> str:
        return (f"StoredMessage(to={masked(self.destination)}, parts={len(self.parts)}, "
                f"ids={self.message_ids}, text={self.text!r})")


@dataclasses.dataclass
class _Session:
    writer: asyncio.StreamWriter
    peer: str
    system_id: str = ""
    mode: str = ""  # "" until bound
    pending: dict[int, asyncio.Future[Any]] = dataclasses.field(default_factory=dict)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def receives(self) -> bool:
        return self.mode in ("receiver", "transceiver")

    async def send(self, pdu: Any) -> None:
        async with self.lock:
            self.writer.write(pdu.generate())
            await self.writer.drain()


def concat_info(short_message: bytes, esm_class: int) -> tuple[int | None, int, int, bytes]:
    """(reference, count, number, user data) from a UDH, or (None, 1, 1, data) if none.

    >>> concat_info(bytes.fromhex("0500030a0302") + b"xy", 0x40)
    (10, 3, 2, b'xy')
    """
    if not esm_class & ESM_UDHI or not short_message:
        return None, 1, 1, short_message
    length = short_message[0]
    header, data = short_message[1:1 + length], short_message[1 + length:]
    position = 0
    while position + 2 <= len(header):
        iei, size = header[position], header[position + 1]
        value = header[position + 2:position + 2 + size]
        if iei == 0x00 and size == 3:
            return value[0], value[1], value[2], data
        if iei == 0x08 and size == 4:
            return (value[0] << 8) | value[1], value[2], value[3], data
        position += 2 + size
    return None, 1, 1, data


class Smsc:
    """The SMSC. ``async with Smsc(...) as smsc:`` listens on 127.0.0.1 and a free port."""

    def __init__(
        self, system_id: str = "onemap", password: str = "", *, host: str = "127.0.0.1",
        port: int = 0, receipt_delay: float = 0.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC), outbox: Path | None = None,
    ) -> None:
        self.accounts = {system_id: password}
        self.outbox = outbox
        self.host = host
        self.port = port
        self.clock = clock
        self.receipt_delay = receipt_delay
        self.receipts = True
        self.receipt_status = "DELIVRD"
        self.receipt_error = "000"
        self.response_delay = 0.0
        self.answering = True
        self.fail_fraction = 0.0
        self.fail_fraction_status = ESME_RTHROTTLED
        self.messages: list[StoredMessage] = []
        self.submits: list[Submit] = []
        self.deliver_responses: list[tuple[str, int]] = []  # (kind, status) per deliver_sm
        self.enquire_links = 0
        self.binds = 0
        self._failures: collections.deque[int | None] = collections.deque()
        self._random = random.Random(0)  # reproducible fault injection
        self._seq = SequenceNumbers()
        self._next_id = 0
        self._partial: dict[tuple[str, str, str, int], dict[int, tuple[str, str]]] = {}
        self._sessions: list[_Session] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()  # one per connection
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Smsc:
        """Listen (again, on the same port after a stop) and return self."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMSC listening on %s:%d", self.host, self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every session (an SMSC outage, as the ESME sees it)."""
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let each connection's handler see its socket close, so none is left to be
        # cancelled (noisily) when the loop ends.
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Smsc:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        for session in list(self._sessions):
            session.writer.close()

    # -- fault injection ---------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, after: int = 0) -> None:
        """Answer ``count`` submit_sm with ``status`` (e.g. 0x58 throttled), ``after`` others.

        ``after=1`` on a three-part message refuses its second part.
        """
        self._failures.extend([None] * after + [status] * count)

    # -- what tests and the demo look at -----------------------------------------------------

    @property
    def bound_sessions(self) -> int:
        return sum(1 for s in self._sessions if s.mode)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (checked whenever the SMSC's state changes)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def send_mo(self, phone: str, text: str, to: str = "", timeout: float = 5.0) -> int:
        """A mobile-originated message from ``phone`` to the first bound receiving ESME.

        Returns the deliver_sm_resp status (0 = the ESME accepted it).
        """
        ucs2 = not text.isascii()
        return await self._deliver(
            "reply", source_addr=phone, destination_addr=to, esm_class=0,
            data_coding=DATA_CODING_UCS2 if ucs2 else 0,
            short_message=text.encode("utf-16-be" if ucs2 else "ascii"), timeout=timeout)

    # -- the protocol ------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = _Session(writer, f"{peer[0]}:{peer[1]}" if peer else "?")
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        self._sessions.append(session)
        try:
            while True:
                raw = await read_pdu_bytes(reader)
                if not self.answering:
                    continue  # a hung SMSC: reads, never answers
                await self._dispatch(session, raw)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if handler is not None:
                self._handlers.discard(handler)
            self._sessions.remove(session)
            for future in session.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("session closed"))
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await self._notify()

    async def _dispatch(self, session: _Session, raw: bytes) -> None:
        try:
            pdu = parse_pdu(raw)
        except Exception:  # smpplib raises assorted types on garbage
            nack = make_pdu("generic_nack", self._seq, status=ESME_RINVCMDID)
            nack.sequence = int.from_bytes(raw[12:16], "big")
            await session.send(nack)
            return
        command = str(pdu.command)
        if command.endswith("_resp") or command == "generic_nack":
            future = session.pending.pop(int(pdu.sequence), None)
            if future is not None and not future.done():
                future.set_result(pdu)
        elif command in BIND_MODES:
            await self._bind(session, pdu)
        elif command == "enquire_link":
            self.enquire_links += 1
            await session.send(response_for(pdu, self._seq))
            await self._notify()
        elif command == "unbind":
            await session.send(response_for(pdu, self._seq))
            session.writer.close()
        elif command == "submit_sm":
            if session.mode not in ("transmitter", "transceiver"):
                await session.send(response_for(pdu, self._seq, status=ESME_RINVBNDSTS))
            elif self.response_delay > 0:
                self._spawn(self._submit(session, pdu, self.response_delay))
            else:
                await self._submit(session, pdu, 0.0)
        else:
            nack = make_pdu("generic_nack", self._seq, status=ESME_RINVCMDID)
            nack.sequence = pdu.sequence
            await session.send(nack)

    async def _bind(self, session: _Session, pdu: Any) -> None:
        system_id = bytes(pdu.system_id or b"").decode("ascii", "replace")
        password = bytes(pdu.password or b"").decode("ascii", "replace")
        if session.mode:
            status = ESME_RALYBND
        elif system_id not in self.accounts:
            status = ESME_RINVSYSID
        elif self.accounts[system_id] != password:
            status = ESME_RINVPASWD
        else:
            status = ESME_ROK
        if status == ESME_ROK:
            session.system_id = system_id
            session.mode = BIND_MODES[str(pdu.command)]
            self.binds += 1
            log.info("SMSC: %s bound as %s from %s", system_id, session.mode, session.peer)
            await session.send(response_for(pdu, self._seq, system_id="OneMapSMSC"))
        else:
            log.info("SMSC: bind by %r from %s refused: %s", system_id, session.peer,
                     status_name(status))
            await session.send(response_for(pdu, self._seq, status=status))
        await self._notify()

    def _decide(self, destination: str) -> int:
        planned = self._failures.popleft() if self._failures else None
        if planned is not None:
            return planned
        if not destination.isdigit() or not 5 <= len(destination) <= 20:
            return ESME_RINVDSTADR
        if self.fail_fraction and self._random.random() < self.fail_fraction:
            return self.fail_fraction_status
        return ESME_ROK

    async def _submit(self, session: _Session, pdu: Any, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        destination = bytes(pdu.destination_addr or b"").decode("ascii", "replace")
        source = bytes(pdu.source_addr or b"").decode("ascii", "replace")
        esm_class = int(pdu.esm_class or 0)
        data_coding = int(pdu.data_coding or 0)
        reference, count, number, data = concat_info(bytes(pdu.short_message or b""), esm_class)
        if reference is None and pdu.sar_msg_ref_num is not None:
            reference, count = int(pdu.sar_msg_ref_num), int(pdu.sar_total_segments or 1)
            number = int(pdu.sar_segment_seqnum or 1)
        text = decode_text(data, data_coding)
        status = self._decide(destination)
        message_id = ""
        if status == ESME_ROK:
            self._next_id += 1
            message_id = f"{self._next_id:08X}"
        self.submits.append(Submit(destination, text, reference, number, count, status,
                                   message_id))
        if status != ESME_ROK:
            log.info("SMSC: submit_sm to %s refused: %s", masked(destination),
                     status_name(status))
            with contextlib.suppress(ConnectionError, OSError):
                await session.send(response_for(pdu, self._seq, status=status))
            await self._notify()
            return
        with contextlib.suppress(ConnectionError, OSError):
            await session.send(response_for(pdu, self._seq, message_id=message_id))
        registered = int(pdu.registered_delivery or 0)
        if registered & 1 and self.receipts:
            self._spawn(self._receipt(destination, source, message_id, text))
        parts = [(text, message_id)]
        if reference is not None and count > 1:
            key = (session.system_id, source, destination, reference)
            collected = self._partial.setdefault(key, {})
            collected[number] = (text, message_id)
            if len(collected) < count:
                await self._notify()
                return
            del self._partial[key]
            parts = [collected[n] for n in sorted(collected)]
        message = StoredMessage(
            system_id=session.system_id, source_addr=source, destination=destination,
            text="".join(p for p, _ in parts), parts=[p for p, _ in parts],
            message_ids=[i for _, i in parts], data_coding=data_coding, esm_class=esm_class,
            registered_delivery=registered, reference=reference if count > 1 else None,
            received_at=self.clock())
        self.messages.append(message)
        log.info("SMSC: message to %s in %d part(s)", masked(destination), len(parts))
        if self.outbox is not None:
            self._write_outbox(self.outbox, message)
        await self._notify()

    @staticmethod
    def _write_outbox(path: Path, message: StoredMessage) -> None:
        """One JSON line per complete message (a few hundred bytes: fine on the loop)."""
        line = orjson.dumps({
            "received_at": message.received_at.isoformat(), "to": message.destination,
            "from": message.source_addr, "text": message.text, "parts": len(message.parts),
            "message_ids": message.message_ids}) + b"\n"
        try:
            with path.open("ab") as out:
                out.write(line)
        except OSError as exc:
            log.error("SMSC cannot write its outbox %s: %s", path, exc)

    async def _receipt(self, phone: str, source: str, message_id: str, text: str) -> None:
        if self.receipt_delay:
            await asyncio.sleep(self.receipt_delay)
        stamp = self.clock().strftime("%y%m%d%H%M")
        stat = self.receipt_status
        delivered = "001" if stat == "DELIVRD" else "000"
        body = (f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{stamp} "
                f"done date:{stamp} stat:{stat} err:{self.receipt_error} text:")
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await self._deliver(
                "receipt", source_addr=phone, destination_addr=source, esm_class=ESM_RECEIPT,
                data_coding=0, short_message=body.encode("ascii"),
                receipted_message_id=message_id, message_state=RECEIPT_STATES.get(stat, 7))

    async def _deliver(self, kind: str, *, timeout: float = 5.0, **fields: Any) -> int:
        """Send a deliver_sm to the first bound receiving session; its deliver_sm_resp status."""
        session = next((s for s in self._sessions if s.receives), None)
        if session is None:
            raise ConnectionError("no ESME is bound to receive")
        pdu = make_pdu("deliver_sm", self._seq, **fields)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        session.pending[int(pdu.sequence)] = future
        await session.send(pdu)
        resp = await asyncio.wait_for(future, timeout)
        status = int(resp.status or 0)
        self.deliver_responses.append((kind, status))
        await self._notify()
        return status


async def _serve_forever(smsc: Smsc) -> None:
    await smsc.start()
    print(f"SMSC listening on {smsc.host}:{smsc.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await smsc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A loopback SMPP 3.4 SMSC for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--system-id", default="onemap")
    parser.add_argument("--fail-fraction", type=float, default=0.0,
                        help="fraction of submits answered ESME_RTHROTTLED")
    parser.add_argument("--receipt-delay", type=float, default=0.5)
    parser.add_argument("--outbox", type=Path,
                        help="append every complete message to this JSONL file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The password comes from the environment, not argv, so it is not visible in `ps`.
    if args.outbox is not None:
        args.outbox.parent.mkdir(parents=True, exist_ok=True)
    smsc = Smsc(args.system_id, os.environ.get("ONEMAP_SMSC_PASSWORD", ""), host=args.host,
                port=args.port, receipt_delay=args.receipt_delay, outbox=args.outbox)
    smsc.fail_fraction = args.fail_fraction
    asyncio.run(_serve_forever(smsc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
