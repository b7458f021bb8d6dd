"""SMPP 3.4 provider: a carrier's SMSC over one bound transceiver session.

URL: ``smpp://SYSTEM_ID:PASSWORD@HOST:PORT?source_addr=12110&...`` (the password may instead
come from a secret setting, see :func:`onemap.sinks.sms.outbox.provider_from_url`). Options:

``system_type``, ``source_addr``, ``source_ton``, ``source_npi``, ``dest_ton``, ``dest_npi``
    addressing as the carrier assigned it (``dest_ton`` defaults to 1 for ``+`` numbers, else 0);
``enquire_link`` (s, 30)
    keep-alive interval; an unanswered enquire_link drops the link and reconnects;
``timeout`` (s, 10)
    for connect, bind and every response; a submit that times out returns RETRY;
``reconnect_min``, ``reconnect_max`` (s, 1 and 30)
    exponential back-off between connection attempts;
``window`` (10)
    submit_sm PDUs in flight at once; ``registered_delivery`` (1): ask for receipts.

Why async on smpplib's PDU codec rather than ``smpplib.client.Client`` in a thread: the Client
reads and writes one blocking socket from a single thread, so submits, keep-alives and the
SMSC's own requests (deliver_sm, enquire_link) would all have to be funnelled through a
dedicated thread and a queue, with timeouts and shutdown crossing threads. An asyncio stream
does the same on the worker's loop: each request waits on its own future keyed by sequence
number, the reader dispatches responses and deliver_sm as they come, and cancellation and
timeouts are plain ``asyncio.wait_for``. smpplib still encodes and parses every PDU (the same
codec the carrier interop of smpplib has been tested on; the loopback SMSC uses it too).

Text goes out as UCS-2 (data_coding 8). Up to 70 UTF-16 units is one submit_sm; longer text is
split into parts of 67 units (the same split as :func:`templates.segments` for Chinese text),
each carrying a UDH (IEI 0x00, 8-bit reference, count, number) with esm_class UDHI. A part the
SMSC throttles is resumed on retry with the same reference, skipping parts already accepted, so
the handset still reassembles one message and no part is sent twice.

Caveat: an SMSC may accept a submit whose response is then lost (timeout); the provider must
return RETRY and the message may arrive twice. SMPP has no idempotency key to prevent that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from smpplib import consts as smpp_consts
from smpplib import smpp as smpp_codec

from onemap.errors import ComponentError, ConfigError
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import EventCallback, SmsEvent
from onemap.sinks.sms.roster import masked

log = logging.getLogger(__name__)

ESME_ROK = 0x00
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RINVCMDID = 0x03
BAD_CREDENTIALS = frozenset({0x0E, 0x0F})  # ESME_RINVPASWD, ESME_RINVSYSID
#: Statuses worth retrying later; every other error status is permanent for that message.
RETRY_STATUSES = frozenset({ESME_RINVBNDSTS, ESME_RSYSERR, ESME_RMSGQFUL, ESME_RTHROTTLED,
                            ESME_RX_T_APPN})

DATA_CODING_UCS2 = 8
ESM_RECEIPT = 0x04
ESM_UDHI = 0x40
SINGLE_UNITS = 70  # UTF-16 code units in one UCS-2 SMS (140 octets)
PART_UNITS = 67  # ... and in one part of a concatenated SMS (6 octets go to the UDH)
MAX_PARTS = 255
MAX_PDU = 64 * 1024
RESPONSE_BIT = 0x80000000
#: message_state TLV values (SMPP 3.4, 5.2.28) as receipt stat words.
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}
_STATUS_NAMES = {value: name.removeprefix("SMPP_") for name, value in vars(smpp_consts).items()
                 if name.startswith("SMPP_ESME_") and isinstance(value, int)}
_RECEIPT_FIELD = re.compile(r"(?:^|\s)(id|stat|err):(\S*)", re.IGNORECASE)
_TRACKED_IDS = 100_000  # message ids remembered for tying receipts to keys
_TRACKED_PROGRESS = 10_000  # partly submitted concatenated messages remembered for resuming


def status_name(status: int) -> str:
    """``ESME_RTHROTTLED (0x58)``: what the logs and errors say about a command_status."""
    return f"{_STATUS_NAMES.get(status, 'status')} (0x{status:02X})"


def split_units(text: str) -> list[str]:
    """Split text into SMS parts by UTF-16 code units, never inside a surrogate pair.

    For text within the Basic Multilingual Plane (all common Chinese) this is exactly
    :func:`onemap.sinks.sms.templates.segments`; a rare character outside it (some place
    names use CJK Extension B) takes two units, as it does on the air.

    >>> [len(p) for p in split_units("啊" * 70)], [len(p) for p in split_units("啊" * 150)]
    ([70], [67, 67, 16])
    """
    if len(text.encode("utf-16-be")) <= 2 * SINGLE_UNITS:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > PART_UNITS:
            parts.append("".join(current))
            current, used = [], 0
        current.append(char)
        used += width
    if current:
        parts.append("".join(current))
    return parts


def encode_parts(text: str, reference: int) -> list[bytes]:
    """The short_message octets of each submit_sm: UCS-2, with a concatenation UDH if split.

    >>> encode_parts("中文", 7)
    [b'N-e\\x87']
    >>> encode_parts("啊" * 71, 7)[1][:6].hex()
    '050003070202'
    """
    parts = split_units(text)
    if len(parts) == 1:
        return [text.encode("utf-16-be")]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"text of {len(text)} characters needs {len(parts)} parts (max 255)")
    return [bytes((5, 0x00, 3, reference & 0xFF, len(parts), number)) + part.encode("utf-16-be")
            for number, part in enumerate(parts, start=1)]


def decode_text(octets: bytes, data_coding: int) -> str:
    """Text of a deliver_sm: UCS-2, GBK (data_coding 15, common with Chinese SMSCs) or 8-bit."""
    if data_coding == DATA_CODING_UCS2:
        return octets.decode("utf-16-be", "replace")
    if data_coding == 15:
        return octets.decode("gbk", "replace")
    return octets.decode("latin-1")


def parse_receipt(text: str) -> dict[str, str]:
    """The id, stat and err of a receipt's text (SMPP 3.4 appendix B format).

    >>> parse_receipt("id:0A1B sub:001 dlvrd:001 submit date:2408230400 "
    ...               "done date:2408230400 stat:DELIVRD err:000 text:")
    {'id': '0A1B', 'stat': 'DELIVRD', 'err': '000'}
    """
    return {name.lower(): value for name, value in _RECEIPT_FIELD.findall(text)}


def _id_variants(message_id: str) -> list[str]:
    """Some SMSCs give the id in hex in submit_sm_resp and in decimal in the receipt."""
    mid = message_id.strip().lower()
    out = [mid]
    if mid.isdigit():
        out.append(format(int(mid), "x"))
    with contextlib.suppress(ValueError):
        out.append(str(int(mid, 16)))
    return out


@dataclasses.dataclass(frozen=True)
class SmppConfig:
    """Everything needed to reach and bind to one SMSC. The password never appears in repr."""

    host: str
    port: int
    system_id: str
    password: str = dataclasses.field(repr=False)
    system_type: str = ""
    source_addr: str = ""
    source_ton: int = 0
    source_npi: int = 0
    dest_ton: int | None = None
    dest_npi: int = 1
    enquire_link_s: float = 30.0
    timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    window: int = 10
    registered_delivery: int = 1

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, *, secret: str | None = None) -> SmppConfig:
        field = "ONEMAP_SMS_OUTBOX"
        parts = urlsplit(url)
        if parts.scheme != "smpp" or not parts.hostname:
            raise ConfigError("SMPP URL must look like smpp://SYSTEM_ID@HOST:PORT", field=field)
        try:
            port = parts.port or 2775
        except ValueError as exc:
            raise ConfigError(f"SMPP URL has a bad port for host {parts.hostname}",
                              field=field) from exc
        system_id = unquote(parts.username or "")
        password = secret if secret is not None else unquote(parts.password or "")
        if not system_id:
            raise ConfigError("SMPP URL needs a system_id (smpp://SYSTEM_ID@HOST:PORT)",
                              field=field)
        if len(system_id) > 15:
            raise ConfigError(f"SMPP system_id {system_id!r} is longer than 15 characters",
                              field=field)
        if len(password) > 8:
            raise ConfigError("SMPP password is longer than 8 characters (SMPP 3.4 limit)",
                              field=field)
        kwargs: dict[str, Any] = {}
        numbers = {"source_ton": int, "source_npi": int, "dest_ton": int, "dest_npi": int,
                   "enquire_link": float, "timeout": float, "reconnect_min": float,
                   "reconnect_max": float, "window": int, "registered_delivery": int}
        limits = {"system_type": 12, "source_addr": 20}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in limits:
                if len(value) > limits[name]:
                    raise ConfigError(f"SMPP {name} {value!r} is longer than {limits[name]}",
                                      field=field)
                kwargs[name] = value
            elif name in numbers:
                try:
                    number = numbers[name](value)
                except ValueError as exc:
                    raise ConfigError(f"SMPP option {name}={value!r} is not a number",
                                      field=field) from exc
                if number < 0:
                    raise ConfigError(f"SMPP option {name}={value!r} is negative", field=field)
                key = f"{name}_s" if numbers[name] is float else name
                kwargs[key] = number
            else:
                raise ConfigError(f"unknown SMPP option {name!r}; known: "
                                  f"{', '.join(sorted([*numbers, *limits]))}", field=field)
        return cls(host=parts.hostname, port=port, system_id=system_id, password=password,
                   **kwargs)


class SmppLinkError(ConnectionError):
    """The SMPP session is gone (closed, broken, unbound, or a bad PDU length)."""


class _BindRejected(Exception):
    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"bind rejected: {status_name(status)}")


class SequenceNumbers:
    """The sequence-number source smpplib's PDU constructors call (``client.next_sequence``)."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence


class _Parser:
    """A throwaway sequence source for parsing: the parsed header sets the real number."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


def make_pdu(command: str, sequence: SequenceNumbers | _Parser, **fields: Any) -> Any:
    """Build one smpplib PDU object (typed Any: smpplib has no type hints)."""
    return smpp_codec.make_pdu(command, client=sequence, **fields)


def parse_pdu(raw: bytes) -> Any:
    """Parse one complete PDU; unknown TLVs are skipped as SMPP 3.4 requires."""
    return smpp_codec.parse_pdu(raw, client=_Parser(), allow_unknown_opt_params=True)


async def read_pdu_bytes(reader: asyncio.StreamReader) -> bytes:
    """One whole PDU off the stream (length-prefixed); raises on EOF or a bad length."""
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">L", head)
    if not 16 <= length <= MAX_PDU:
        raise SmppLinkError(f"bad PDU length {length}")
    return head + await reader.readexactly(length - 4)


def response_for(pdu: Any, sequence: SequenceNumbers | _Parser, status: int = ESME_ROK,
                 **fields: Any) -> Any:
    """The ``*_resp`` PDU answering request ``pdu`` (same sequence number)."""
    resp = make_pdu(f"{pdu.command}_resp", sequence, status=status, **fields)
    resp.sequence = pdu.sequence
    return resp


def _text(value: Any) -> str:
    """smpplib parses C-octet strings as bytes; addresses and ids are ASCII."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


@dataclasses.dataclass
class _Progress:
    """A concatenated message part-way through submission: resumed with the same reference."""

    text: str
    reference: int
    ids: list[str | None]


class SmppProvider:
    """SMS through an SMSC over SMPP 3.4; see the module docstring for the why of each part."""

    name = "smpp"

    def __init__(
        self, config: SmppConfig, *, on_event: EventCallback | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.on_event = on_event
        self.clock = clock
        self.binds = 0  # successful binds, for tests and metrics (a reconnect is a second bind)
        self.enquire_links_sent = 0
        self._seq = SequenceNumbers()
        self._reference = random.randrange(256)  # a UDH reference, not a secret
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._pending_keys: dict[int, str] = {}  # submit_sm sequence -> SmsMessage.key
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._bound = asyncio.Event()
        self._attempted = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._window = asyncio.Semaphore(max(1, config.window))
        self._closing = False
        self._last_error = "not connected yet"
        self._broken_reason: str | None = None  # why we dropped the link ourselves
        self._last_received = 0.0
        self._ids: OrderedDict[str, str] = OrderedDict()  # message id -> SmsMessage.key
        self._ids_by_key: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._progress: OrderedDict[str, _Progress] = OrderedDict()
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, secret: str | None = None,
                 on_event: EventCallback | None = None) -> SmppProvider:
        return cls(SmppConfig.from_url(url, secret=secret), on_event=on_event)

    def __repr__(self) -> str:
        c = self.config
        return f"SmppProvider(smpp://{c.system_id}:***@{c.where})"

    # -- the SmsProvider interface -------------------------------------------------------------

    async def check(self) -> None:
        """Bind once (or wait for the running session); raise naming host:port if it fails."""
        self._ensure_running()
        if self._bound.is_set():
            return
        self._attempted.clear()
        try:
            await asyncio.wait_for(self._attempted.wait(), timeout=self.config.timeout_s * 2)
        except TimeoutError:
            self._last_error = "no answer"
        if not self._bound.is_set():
            reason = self._last_error
            await self._stop_runner()
            raise ComponentError(
                f"SMPP bind to {self.config.where} as {self.config.system_id!r} failed: "
                f"{reason}; check the SMSC address, system_id and password "
                "(ONEMAP_SMS_OUTBOX)")

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        self._ensure_running()
        return list(await asyncio.gather(*(self._submit_one(m) for m in messages)))

    async def close(self) -> None:
        """Unbind politely (briefly), then drop the link and stop reconnecting."""
        self._closing = True
        if self._bound.is_set():
            with contextlib.suppress(Exception):
                await self._request("unbind", timeout=min(1.0, self.config.timeout_s))
        await self._stop_runner()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- receipts ----------------------------------------------------------------------------

    def key_for(self, message_id: str) -> str | None:
        """The SmsMessage key a part's message id belongs to (None if unknown here)."""
        for variant in _id_variants(message_id):
            if variant in self._ids:
                return self._ids[variant]
        return None

    def message_ids(self, key: str) -> tuple[str, ...]:
        """The SMSC's message ids of each part of the message with this key, in order."""
        return self._ids_by_key.get(key, ())

    async def ping(self) -> None:
        """One enquire_link round trip; raises TimeoutError or ConnectionError."""
        if not self._bound.is_set():
            raise ConnectionError(f"SMPP {self.config.where} is not bound")
        await self._request("enquire_link", timeout=self.config.timeout_s)
        self.enquire_links_sent += 1

    # -- submitting --------------------------------------------------------------------------

    async def _submit_one(self, message: SmsMessage) -> Outcome:
        c = self.config
        try:
            await asyncio.wait_for(self._bound.wait(), timeout=c.timeout_s)
        except TimeoutError:
            log.warning("SMPP %s not bound (%s); %s to %s will be retried", c.where,
                        self._last_error, message.key, masked(message.phone))
            return Outcome.RETRY
        try:
            return await self._submit_parts(message)
        except Exception:
            # Not a network condition (those are handled inside): a defect. Dead-letter the
            # message, visibly, rather than crash the worker or retry it forever.
            log.exception("SMPP submit of %s to %s failed unexpectedly", message.key,
                          masked(message.phone))
            return Outcome.FAILED

    async def _submit_parts(self, message: SmsMessage) -> Outcome:
        progress = self._progress.pop(message.key, None)
        if progress is None or progress.text != message.text:
            self._reference = (self._reference + 1) % 256
            parts = split_units(message.text)
            progress = _Progress(message.text, self._reference, [None] * len(parts))
        try:
            payloads = encode_parts(message.text, progress.reference)
        except ValueError as exc:
            log.error("SMPP cannot send %s to %s: %s", message.key, masked(message.phone), exc)
            return Outcome.FAILED
        for index in range(len(payloads)):
            if progress.ids[index] is not None:
                continue  # accepted on an earlier attempt: never sent twice
            outcome = await self._submit_part(message, progress, index, payloads)
            if outcome is not None:
                return outcome
        ids = tuple(i or "" for i in progress.ids)
        self._ids_by_key[message.key] = ids
        if len(self._ids_by_key) > _TRACKED_IDS:
            self._ids_by_key.popitem(last=False)
        log.info("SMPP %s accepted %s to %s in %d part(s): %s", self.config.where, message.key,
                 masked(message.phone), len(ids), ",".join(ids))
        return Outcome.DELIVERED

    async def _submit_part(self, message: SmsMessage, progress: _Progress, index: int,
                           payloads: list[bytes]) -> Outcome | None:
        """Submit one part; None when accepted, else the message's outcome."""
        c = self.config
        who = masked(message.phone)
        phone = message.phone
        dest_ton = c.dest_ton if c.dest_ton is not None else (1 if phone.startswith("+") else 0)
        try:
            async with self._window:
                resp = await self._request(
                    "submit_sm", timeout=c.timeout_s, key=message.key,
                    service_type=None, source_addr_ton=c.source_ton,
                    source_addr_npi=c.source_npi, source_addr=c.source_addr,
                    dest_addr_ton=dest_ton, dest_addr_npi=c.dest_npi,
                    destination_addr=phone.removeprefix("+"),
                    esm_class=ESM_UDHI if len(payloads) > 1 else 0,
                    registered_delivery=c.registered_delivery,
                    data_coding=DATA_CODING_UCS2, short_message=payloads[index])
        except TimeoutError:
            self._keep_progress(message.key, progress)
            log.warning("SMPP %s did not answer submit_sm within %.1fs; dropping the link; "
                        "%s to %s will be retried", c.where, c.timeout_s, message.key, who)
            self._break_link("submit_sm timeout")
            return Outcome.RETRY
        except (ConnectionError, OSError) as exc:
            self._keep_progress(message.key, progress)
            log.warning("SMPP link to %s lost during submit (%s); %s to %s will be retried",
                        c.where, exc, message.key, who)
            return Outcome.RETRY
        status = int(resp.status or 0)
        if resp.command == "generic_nack" and status == ESME_ROK:
            status = ESME_RINVCMDID
        if status == ESME_ROK:
            progress.ids[index] = _text(resp.message_id)  # tied to the key by the reader
            return None
        if status in RETRY_STATUSES:
            self._keep_progress(message.key, progress)
            log.warning("SMPP %s refused part %d/%d of %s to %s for now: %s; will retry",
                        c.where, index + 1, len(payloads), message.key, who,
                        status_name(status))
            return Outcome.RETRY
        log.error("SMPP %s rejected part %d/%d of %s to %s for good: %s", c.where,
                  index + 1, len(payloads), message.key, who, status_name(status))
        return Outcome.FAILED

    def _keep_progress(self, key: str, progress: _Progress) -> None:
        if any(progress.ids):
            self._progress[key] = progress
            if len(self._progress) > _TRACKED_PROGRESS:
                self._progress.popitem(last=False)

    def _remember(self, message_id: str, key: str) -> None:
        self._ids[message_id.strip().lower()] = key
        if len(self._ids) > _TRACKED_IDS:
            self._ids.popitem(last=False)

    # -- the session ---------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._closing = False
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=f"smpp-{self.config.where}")

    async def _stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._drop_link("closed")

    async def _run(self) -> None:
        """Connect, bind, keep alive; on loss reconnect with exponential back-off and jitter."""
        c = self.config
        delay = c.reconnect_min_s
        while not self._closing:
            try:
                await self._connect_and_bind()
            except (_BindRejected, OSError, TimeoutError) as exc:
                self._last_error = self._describe(exc)
                self._drop_link(self._last_error)
                self._attempted.set()
                log.warning("SMPP %s as %r: %s; next attempt in %.1fs", c.where, c.system_id,
                            self._last_error, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # jitter
                delay = min(max(delay * 2, c.reconnect_min_s), c.reconnect_max_s)
                if isinstance(exc, _BindRejected) and exc.status in BAD_CREDENTIALS:
                    delay = c.reconnect_max_s  # carriers lock accounts that keep failing binds
                continue
            delay = c.reconnect_min_s
            self.binds += 1
            self._last_error = "link lost"
            self._bound.set()
            self._attempted.set()
            log.info("SMPP bound to %s as %r (transceiver)", c.where, c.system_id)
            keepalive = asyncio.get_running_loop().create_task(self._keepalive())
            reader = self._reader_task
            assert reader is not None
            try:
                await asyncio.wait({reader, keepalive}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                keepalive.cancel()
                self._bound.clear()
                errors = [self._broken_reason, self._task_error(reader),
                          self._task_error(keepalive)]
                reason = next((e for e in errors if e), "link lost")
                self._drop_link(reason)
            if not self._closing:
                log.warning("SMPP link to %s lost (%s); reconnecting", c.where, reason)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, _BindRejected):
            return str(exc)
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.config.timeout_s:.1f}s"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        return str(exc) or type(exc).__name__

    @staticmethod
    def _task_error(task: asyncio.Task[None]) -> str | None:
        if not task.done() or task.cancelled():
            return None
        exc = task.exception()
        return None if exc is None else (str(exc) or type(exc).__name__)

    async def _connect_and_bind(self) -> None:
        c = self.config
        reader, writer = await asyncio.wait_for(asyncio.open_connection(c.host, c.port),
                                                timeout=c.timeout_s)
        self._writer = writer
        self._broken_reason = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        resp = await self._request(
            "bind_transceiver", timeout=c.timeout_s, system_id=c.system_id,
            password=c.password, system_type=c.system_type, addr_ton=0, addr_npi=0,
            address_range="")
        if resp.command == "generic_nack" or resp.status != ESME_ROK:
            raise _BindRejected(int(resp.status or ESME_RINVCMDID))

    def _break_link(self, reason: str) -> None:
        """Close the socket; the reader sees EOF and the runner reconnects."""
        self._broken_reason = reason
        if self._writer is not None:
            self._writer.close()

    def _drop_link(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            if self._reader_task.done():
                self._task_error(self._reader_task)  # retrieved: no "never retrieved" noise
            else:
                self._reader_task.cancel()
        self._reader_task = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(SmppLinkError(reason))

    async def _keepalive(self) -> None:
        """enquire_link when the link has been quiet for an interval; no answer ends the link."""
        loop = asyncio.get_running_loop()
        interval = self.config.enquire_link_s
        while True:
            quiet = loop.time() - self._last_received
            await asyncio.sleep(max(0.05, interval - quiet))
            if loop.time() - self._last_received < interval:
                continue
            try:
                await self.ping()
            except TimeoutError:
                raise SmppLinkError(f"enquire_link unanswered for {self.config.timeout_s:.1f}s")\
                    from None

    async def _request(self, command: str, *, timeout: float, key: str | None = None,
                       **fields: Any) -> Any:
        """Send one request PDU and wait for the response with its sequence number.

        ``key``: the message a submit_sm belongs to; the reader ties the id in the response to
        it before reading on, so a receipt right behind the response always finds its key.
        """
        writer = self._writer
        if writer is None or writer.is_closing():
            raise SmppLinkError("not connected")
        pdu = make_pdu(command, self._seq, **fields)
        sequence = int(pdu.sequence)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[sequence] = future
        if key is not None:
            self._pending_keys[sequence] = key
        try:
            async with self._write_lock:
                writer.write(pdu.generate())
                await writer.drain()
            return await asyncio.wait_for(future, timeout=timeout)
        finally:
            self._pending.pop(sequence, None)
            self._pending_keys.pop(sequence, None)

    async def _send(self, pdu: Any) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise SmppLinkError("not connected")
        async with self._write_lock:
            writer.write(pdu.generate())
            await writer.drain()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Dispatch every PDU from the SMSC: responses to their waiters, requests to handlers."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw = await read_pdu_bytes(reader)
            except asyncio.IncompleteReadError:
                raise SmppLinkError("SMSC closed the connection") from None
            self._last_received = loop.time()
            try:
                pdu = parse_pdu(raw)
            except Exception as exc:  # smpplib raises assorted types
                (command_id, sequence) = struct.unpack(">L4xL", raw[4:16])
                log.warning("SMPP %s sent an undecodable PDU 0x%08X: %s", self.config.where,
                            command_id, exc)
                if not command_id & RESPONSE_BIT:
                    nack = make_pdu("generic_nack", self._seq, status=ESME_RINVCMDID)
                    nack.sequence = sequence
                    await self._send(nack)
                continue
            command = str(pdu.command)
            if command.endswith("_resp") or command == "generic_nack":
                future = self._pending.get(int(pdu.sequence))
                key = self._pending_keys.pop(int(pdu.sequence), None)
                if key is not None and command == "submit_sm_resp" and pdu.status == ESME_ROK:
                    self._remember(_text(pdu.message_id), key)
                if future is not None and not future.done():
                    future.set_result(pdu)
                else:
                    log.debug("SMPP late or unexpected %s seq %s", command, pdu.sequence)
            elif command == "enquire_link":
                await self._send(response_for(pdu, self._seq))
            elif command == "deliver_sm":
                task = loop.create_task(self._on_deliver(pdu))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            elif command == "unbind":
                await self._send(response_for(pdu, self._seq))
                raise SmppLinkError("SMSC unbound the session")
            else:
                nack = make_pdu("generic_nack", self._seq, status=ESME_RINVCMDID)
                nack.sequence = pdu.sequence
                await self._send(nack)

    async def _on_deliver(self, pdu: Any) -> None:
        """Turn a deliver_sm into an SmsEvent, hand it on, then acknowledge it.

        The acknowledgement waits for the handler: if the handler fails, the SMSC is told
        ESME_RX_T_APPN (temporary) and redelivers, so a receipt or a "1" is not lost.
        """
        status = ESME_ROK
        try:
            event = self.event_from(pdu)
        except Exception:  # a malformed deliver_sm will not improve by redelivery: ack it
            log.exception("SMPP %s sent a deliver_sm that cannot be read", self.config.where)
            with contextlib.suppress(OSError):
                await self._send(response_for(pdu, self._seq))
            return
        if self.on_event is None:
            log.info("SMPP %s: %r (no handler)", self.config.where, event)
        else:
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("SMS event handler failed for %r; asking the SMSC to redeliver",
                              event)
                status = ESME_RX_T_APPN
        with contextlib.suppress(OSError):
            await self._send(response_for(pdu, self._seq, status=status))

    def event_from(self, pdu: Any) -> SmsEvent:
        """A receipt (esm_class bit 0x04) or a mobile-originated reply, from a deliver_sm."""
        esm_class = int(pdu.esm_class or 0)
        body: bytes = pdu.short_message or pdu.message_payload or b""
        phone = _text(pdu.source_addr)
        at = self.clock()
        if esm_class & ESM_RECEIPT:
            fields = parse_receipt(body.decode("latin-1"))
            message_id = _text(pdu.receipted_message_id) or fields.get("id", "")
            stat = fields.get("stat", "").upper() or MESSAGE_STATES.get(
                int(pdu.message_state or 0), "")
            key = self.key_for(message_id) if message_id else None
            return SmsEvent(kind="receipt", phone=phone, at=at, message_id=message_id,
                            key=key, status=stat, error=fields.get("err", ""),
                            parts=len(self.message_ids(key)) if key else 0)
        if esm_class & ESM_UDHI and body:
            body = body[1 + body[0]:]  # a reply long enough to be split: each part on its own
        text = decode_text(body, int(pdu.data_coding or 0)).strip()
        return SmsEvent(kind="reply", phone=phone, at=at, text=text)
