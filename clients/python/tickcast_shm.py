"""Read ticks from a tickcast shared-memory region (``tickcast --shm NAME``).

Pure Python (mmap, struct, ctypes for the futex): nothing to compile or
install. Written from ``docs/shm-layout.md``; the Rust reader is
``tickcast::shm::Reader``.

    import sys; sys.path.insert(0, "clients/python")
    from tickcast_shm import Reader, Tick, Gap

    with Reader("demo", symbols=["RELIANCE"]) as r:
        for ev in r:
            if isinstance(ev, Tick):
                ins = r.instrument(ev.slot)
                print(ins.symbol, ins.price(ev.ltp), ev.seq, "(current value)" if ev.snapshot else "")
            elif isinstance(ev, Gap):
                print("lost", ev.lost, "records; current values follow")

Events: ``Tick`` (``snapshot`` True for current values from the last-value
table, with ``prev_seq``: the last seq this reader had for the instrument,
so ticks between ``prev_seq`` and ``seq`` were lost), ``Gap`` (the server
lapped this reader: exactly ``lost`` records), ``WriterDown`` (the server
stopped or went silent) and ``Reattached`` (a restarted server's region).

Cost: a tick costs a few microseconds of Python (see ``--bench``), against
well under a microsecond in Rust; a reader that cannot keep up is lapped
and told so, never silently. Atomic 8-byte loads come from CPython's
``memoryview`` of format ``Q`` (one load instruction on x86-64); the
protocol's ordering relies on x86-64's ordered loads, so this reader runs
on x86-64 only.

Run it: ``python3 clients/python/tickcast_shm.py demo --symbols RELIANCE``.
"""

import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import struct
import sys
import time

__all__ = ["Reader", "Tick", "Gap", "WriterDown", "Reattached", "Instrument", "RegionError"]

MAGIC = b"TICKSHM\0"
WAIT_MAGIC = b"TICKWAIT"
WAIT_SUFFIX = ".wait"
VERSION = 1
PAGE = 4096
MAX_INSTRUMENTS = 1 << 24
MAX_TOTAL = 1 << 40
INSTRUMENT_SIZE = 128
CELL_SIZE = 320
TICK_SIZE = 288
RING_HEADER_SIZE = 256
PARK_SLOTS = 256
STATE_LIVE, STATE_CLOSED = 1, 2
SILENT_AFTER_NS = 2_000_000_000
CHECK_EVERY = 0.1

# Header fields: name -> (offset, struct code).
HEADER = {
    "version": (8, "I"), "header_size": (12, "I"), "total_size": (16, "Q"), "epoch": (24, "Q"),
    "start_ns": (32, "Q"), "writer_pid": (40, "I"), "state": (44, "I"), "heartbeat_ns": (48, "Q"),
    "instrument_count": (56, "I"), "instrument_size": (60, "I"), "instruments_off": (64, "Q"),
    "last_values_off": (72, "Q"), "cell_size": (80, "I"), "tick_size": (84, "I"), "ring_count": (88, "I"),
    "ring_capacity": (92, "I"), "rings_off": (96, "Q"), "ring_stride": (104, "Q"),
    "ring_header_size": (112, "I"), "park_slots": (116, "I"),
}
# The wait file: magic, version, epoch, the futex word, parked bits, lock bytes.
WAIT_EPOCH, WAIT_WAKE_SEQ, WAIT_PARKED, WAIT_LOCKS = 16, 64, 128, 256

# The tick, 288 bytes: 20 scalar fields, 2 padding bytes, then 10 levels.
TICK = struct.Struct("<IIQQQqQqqqqqqQQIIIBB2x" + "qII" * 10)
TICK_FIELDS = ("token", "slot", "seq", "ts_ns", "ts_recv_ns", "ltp", "volume", "bid", "ask", "open", "high", "low",
               "close", "oi", "prev_oi", "ltq", "bid_qty", "ask_qty", "flags", "depth_levels")
assert TICK.size == TICK_SIZE

# futex(2) and fcntl(2) for parking.
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
FUTEX_WAIT, FUTEX_WAKE_OP = 0, 5
FUTEX_OP_OR, FUTEX_OP_ANDN, FUTEX_OP_ARG_SHIFT = 2, 3, 8
FLOCK = struct.Struct("=hh4xqqi4x")  # struct flock on 64-bit Linux


class RegionError(Exception):
    """The region cannot be read (missing, foreign, another version, truncated, no permission)."""


def region_path(name):
    """``demo`` -> ``/dev/shm/tickcast-demo``; anything with a ``/`` is a path."""
    if name.endswith(WAIT_SUFFIX):
        raise RegionError(f"shm name {name!r}: names ending in {WAIT_SUFFIX!r} are the regions' wait files")
    if "/" in name:
        return name
    if not name or name.startswith(".") or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise RegionError(f"shm name {name!r}: use letters, digits, '.', '_' and '-' (or a path with a '/')")
    return "/dev/shm/tickcast-" + name


def _align(n):
    return (n + PAGE - 1) // PAGE * PAGE


class Instrument:
    """One entry of the region's instrument table."""

    __slots__ = ("slot", "token", "exchange", "symbol", "price_decimals", "lot_size", "tick_size")

    def __init__(self, slot, token, exchange, symbol, price_decimals, lot_size, tick_size):
        self.slot, self.token, self.exchange, self.symbol = slot, token, exchange, symbol
        self.price_decimals, self.lot_size, self.tick_size = price_decimals, lot_size, tick_size

    def price(self, raw):
        """A fixed-point price as a float (``285050`` at 2 decimals -> ``2850.5``)."""
        return raw / 10 ** self.price_decimals

    def __repr__(self):
        return f"Instrument({self.exchange}:{self.symbol} token={self.token} slot={self.slot})"


class Tick:
    """A tick: the fields of docs/shm-layout.md, ``bids``/``asks`` as (price, qty, orders) lists
    of ``depth_levels`` levels, and ``snapshot``/``prev_seq`` for current values."""

    __slots__ = TICK_FIELDS + ("bids", "asks", "snapshot", "prev_seq")

    def __init__(self, raw, snapshot=False, prev_seq=0):
        v = TICK.unpack(raw)
        for name, x in zip(TICK_FIELDS, v):
            setattr(self, name, x)
        n = min(self.depth_levels, 5)
        levels = v[20:]
        self.bids = [levels[3 * i:3 * i + 3] for i in range(n)]
        self.asks = [levels[15 + 3 * i:15 + 3 * i + 3] for i in range(n)]
        self.snapshot, self.prev_seq = snapshot, prev_seq

    def __repr__(self):
        kind = "snapshot" if self.snapshot else "tick"
        return f"Tick({kind} token={self.token} seq={self.seq} ltp={self.ltp})"


class Gap:
    """The server lapped this reader: positions ``from_pos .. to_pos`` of feed ``feed`` were lost."""

    __slots__ = ("ring", "feed", "from_pos", "to_pos")

    def __init__(self, ring, feed, from_pos, to_pos):
        self.ring, self.feed, self.from_pos, self.to_pos = ring, feed, from_pos, to_pos

    @property
    def lost(self):
        return self.to_pos - self.from_pos

    def __repr__(self):
        return f"Gap(feed={self.feed} lost={self.lost} positions {self.from_pos}..{self.to_pos})"


class WriterDown:
    """The server stopped (``closed``), went quiet (``silent``), or a new region cannot be used (``unusable``)."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason, detail=None):
        self.reason, self.detail = reason, detail

    def __repr__(self):
        return f"WriterDown({self.reason}{', ' + str(self.detail) if self.detail else ''})"


class Reattached:
    """A restarted server's region (a new epoch); its current values follow."""

    __slots__ = ("epoch",)

    def __init__(self, epoch):
        self.epoch = epoch

    def __repr__(self):
        return f"Reattached(epoch={self.epoch:x})"


class _Futex:
    """futex(2) through libc's syscall(): wait, and atomic OR / AND NOT via FUTEX_WAKE_OP."""

    def __init__(self):
        if SYS_FUTEX is None:
            raise RegionError(f"parking needs futex(2); unknown machine {platform.machine()}: use wait='spin' or 'sleep'")
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long

    def _op(self, addr, op, bit):
        encoded = ((op | FUTEX_OP_ARG_SHIFT) << 28) | (bit << 12)
        r = self.libc.syscall(ctypes.c_long(SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(FUTEX_WAKE_OP),
                              ctypes.c_int(0), ctypes.c_void_p(0), ctypes.c_void_p(addr), ctypes.c_int(encoded))
        if r < 0:
            raise OSError(ctypes.get_errno(), "futex(FUTEX_WAKE_OP)")

    def set_bit(self, addr, bit):
        self._op(addr, FUTEX_OP_OR, bit)

    def clear_bit(self, addr, bit):
        self._op(addr, FUTEX_OP_ANDN, bit)

    def wait(self, addr, expected, seconds):
        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
        ts = Timespec(int(seconds), int((seconds % 1) * 1e9))
        self.libc.syscall(ctypes.c_long(SYS_FUTEX), ctypes.c_void_p(addr), ctypes.c_int(FUTEX_WAIT),
                          ctypes.c_uint(expected), ctypes.byref(ts), ctypes.c_void_p(0), ctypes.c_int(0))


class _Region:
    """One mapped region: validated header, instrument table, views for atomic loads."""

    def __init__(self, path, park, owner=None):
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise RegionError(f"no shared-memory region at {path}: is tickcast running with --shm?") from None
        except PermissionError:
            raise RegionError(f"no permission to read {path}: the server can widen it with --shm-mode and --shm-group") from None
        except OSError as e:
            raise RegionError(f"cannot open {path}: {e}") from None
        try:
            self._attach(path, owner)
            if park:
                self._claim_park_slot(path)
        except BaseException:
            self.close()
            raise

    def _attach(self, path, owner):
        st = os.fstat(self.fd)
        self.dev_ino, self.owner = (st.st_dev, st.st_ino), st.st_uid
        if owner is not None and st.st_uid != owner:
            raise RegionError(f"{path} now belongs to uid {st.st_uid}, not the server's ({owner}): not attaching")
        if st.st_mode & 0o022:
            raise RegionError(f"{path} may be written by others than its owner (mode {st.st_mode & 0o777:o}): "
                              "not a region tickcast made")
        if st.st_size < PAGE:
            raise RegionError(f"{path} is truncated: {st.st_size} bytes, less than the {PAGE}-byte header")
        head = os.pread(self.fd, PAGE, 0)
        if head[:8] != MAGIC:
            raise RegionError(f"{path} is not a tickcast shared-memory region (bad magic)")
        h = {k: struct.unpack_from("<" + code, head, off)[0] for k, (off, code) in HEADER.items()}
        if h["version"] != VERSION:
            raise RegionError(f"{path} has layout version {h['version']}; this reader reads version {VERSION}: "
                              "use a reader from the server's tickcast release")
        n, rings, cap = h["instrument_count"], h["ring_count"], h["ring_capacity"]
        if not 1 <= n <= MAX_INSTRUMENTS or not 1 <= rings <= 1024 or cap < 2 or cap & (cap - 1) or cap > 1 << 30:
            raise RegionError(f"{path}: corrupt header: {n} instruments, {rings} rings of {cap}")
        lv_off = PAGE + _align(n * INSTRUMENT_SIZE)
        rings_off = lv_off + _align(n * CELL_SIZE)
        stride = _align(RING_HEADER_SIZE + cap * CELL_SIZE)
        want = {"header_size": PAGE, "total_size": rings_off + rings * stride, "instrument_size": INSTRUMENT_SIZE,
                "instruments_off": PAGE, "last_values_off": lv_off, "cell_size": CELL_SIZE, "tick_size": TICK_SIZE,
                "rings_off": rings_off, "ring_stride": stride,
                "ring_header_size": RING_HEADER_SIZE, "park_slots": PARK_SLOTS}
        if want["total_size"] > MAX_TOTAL:
            raise RegionError(f"{path}: corrupt header: a region of {want['total_size']} bytes")
        for k, v in want.items():
            if h[k] != v:
                raise RegionError(f"{path}: corrupt header: {k} is {h[k]}, the layout needs {v}")
        total = want["total_size"]
        if st.st_size < total:
            raise RegionError(f"{path} is truncated: {st.st_size} bytes, its header says {total}")
        if h["state"] not in (STATE_LIVE, STATE_CLOSED):
            raise RegionError(f"{path}: corrupt header: state {h['state']}")
        self.epoch, self.capacity, self.mask = h["epoch"], cap, cap - 1
        self.lv_off, self.rings_off, self.stride = lv_off, rings_off, stride
        self.mm = mmap.mmap(self.fd, total, mmap.MAP_SHARED, mmap.PROT_READ)
        self.q = memoryview(self.mm).cast("Q")  # atomic 8-byte loads: self.q[offset // 8]
        self.i = memoryview(self.mm).cast("I")
        self.instruments = []
        for slot in range(n):
            e = PAGE + slot * INSTRUMENT_SIZE
            token, dec = struct.unpack_from("<IB", self.mm, e)
            lot, tick_size = struct.unpack_from("<Iq", self.mm, e + 8)
            exch = self.mm[e + 24:e + 40].split(b"\0", 1)[0].decode("utf-8", "replace")
            sym = self.mm[e + 40:e + 104].split(b"\0", 1)[0].decode("utf-8", "replace")
            self.instruments.append(Instrument(slot, token, exch, sym, min(dec, 18), lot, tick_size))
        self.by_token = {}
        for ins in self.instruments:
            self.by_token.setdefault(ins.token, ins.slot)
        self.ring_names = [self.mm[self.ring(r) + 128:self.ring(r) + 160].split(b"\0", 1)[0].decode("utf-8", "replace")
                           for r in range(rings)]
        self.park_slot = None

    def _claim_park_slot(self, path):
        """Open the wait file (a new server writes it just after its region: wait up to a second for
        it), take the first free slot's lock byte, and map the file writable."""
        wait_path = path + WAIT_SUFFIX
        deadline = time.monotonic() + 1.0
        while True:
            try:
                wfd = os.open(wait_path, os.O_RDWR | os.O_NOFOLLOW)
            except PermissionError:
                raise RegionError(f"no write access to {wait_path}, which parking needs: run as the server's user, "
                                  "let its group park with --shm-mode 0660 --shm-group GROUP, "
                                  "or use wait='spin' or 'sleep'") from None
            except FileNotFoundError:
                wfd = None
            if wfd is not None:
                head = os.pread(wfd, 24, 0)
                if (len(head) == 24 and head[:8] == WAIT_MAGIC and struct.unpack_from("<I", head, 8)[0] == VERSION
                        and struct.unpack_from("<Q", head, WAIT_EPOCH)[0] == self.epoch
                        and os.fstat(wfd).st_size >= PAGE):
                    break
                os.close(wfd)
            if time.monotonic() >= deadline:
                raise RegionError(f"{wait_path} is missing or belongs to another epoch of the region: cannot park")
            time.sleep(0.01)
        self.wait_fd = wfd
        for slot in range(PARK_SLOTS):
            lock = FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, WAIT_LOCKS + slot, 1, 0)
            try:
                fcntl.fcntl(wfd, fcntl.F_OFD_SETLK, lock)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self.park_slot = slot
            self.wait_mm = mmap.mmap(wfd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.wait_i = memoryview(self.wait_mm).cast("I")
            base = ctypes.addressof(ctypes.c_char.from_buffer(self.wait_mm))
            self.wake_addr = base + WAIT_WAKE_SEQ
            self.parked_addr = base + WAIT_PARKED + 4 * (slot // 32)
            return
        raise RegionError(f"{wait_path}: all {PARK_SLOTS} park slots are in use: use wait='spin' or 'sleep'")

    def ring(self, r):
        return self.rings_off + r * self.stride

    def write_pos(self, r):
        return self.q[self.ring(r) // 8]

    def state(self):
        return self.i[44 // 4]

    def heartbeat_ns(self):
        return self.q[48 // 8]

    def close(self):
        for attr in ("q", "i", "wait_i"):
            v = getattr(self, attr, None)
            if v is not None:
                v.release()
                setattr(self, attr, None)
        for attr in ("mm", "wait_mm"):
            m = getattr(self, attr, None)
            if m is not None:
                try:
                    m.close()
                except BufferError:  # a ctypes view not yet collected: collect, then close
                    import gc
                    gc.collect()
                    m.close()
                setattr(self, attr, None)
        for attr in ("fd", "wait_fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)  # closing the wait file releases the park slot's lock
                setattr(self, attr, None)


class Reader:
    """Read a region: current values first (unless ``snapshot=False``), then every tick.

    ``wait``: ``"spin"`` (busy-poll), ``"sleep"`` (poll, then sleep 1 ms), ``"park"`` (futex; needs
    write access), or ``"hybrid"`` (spin 100 µs, then park). ``tokens``/``symbols`` filter.
    """

    def __init__(self, name, tokens=None, symbols=None, wait="spin", snapshot=True):
        if wait not in ("spin", "sleep", "park", "hybrid"):
            raise ValueError(f"wait={wait!r}: expected spin, sleep, park or hybrid")
        if platform.machine() not in ("x86_64", "AMD64"):
            raise RegionError(f"this reader relies on x86-64's load ordering; on {platform.machine()} use the Rust reader")
        self.path, self.wait_mode, self.snapshot = region_path(name), wait, snapshot
        self.tokens, self.symbols = list(tokens or []), list(symbols or [])
        self.parks = wait in ("park", "hybrid")
        self._futex = _Futex() if self.parks else None
        self.region = _Region(self.path, self.parks)
        self.lost = 0
        self.stale = 0  # live ticks older than one already given (two feeds of one instrument)
        self._start(strict=True)

    # -- public -------------------------------------------------------------------------------

    @property
    def epoch(self):
        return self.region.epoch

    @property
    def instruments(self):
        return self.region.instruments

    @property
    def feeds(self):
        return self.region.ring_names

    def instrument(self, slot):
        return self.region.instruments[slot]

    def slot_of_token(self, token):
        return self.region.by_token.get(token)

    def slot_of_symbol(self, key):
        exch, _, sym = key.rpartition(":")
        for ins in self.region.instruments:
            if ins.symbol.upper() == sym.upper() and (not exch or ins.exchange.upper() == exch.upper()):
                return ins.slot
        return None

    def poll(self):
        """The next event if one is ready, else None. Never waits."""
        r = self.region
        if self.phase is not None:
            ev = self._next_snapshot()
            if ev is not None:
                return ev
            self.phase = None
        rings = len(self.pos)
        for i in range(rings):
            ring = (self.next_ring + i) % rings
            while True:
                p = self.pos[ring]
                rec = self.region.ring(ring) + RING_HEADER_SIZE + (p & r.mask) * CELL_SIZE
                s1 = r.q[rec // 8]
                want = 2 * p + 2
                if s1 < want:
                    break
                if s1 > want:
                    return self._lapped(ring)
                raw = r.mm[rec + 8:rec + 8 + TICK_SIZE]
                if r.q[rec // 8] != s1:
                    return self._lapped(ring)
                self.pos[ring] = p + 1
                slot, seq = struct.unpack_from("<4xIQ", raw)
                if slot < len(self.last_seq) and self._wanted(slot):
                    if seq > self.last_seq[slot]:
                        self.last_seq[slot] = seq
                        self.next_ring = (ring + 1) % rings
                        return Tick(raw)
                    if seq > self.snap_seq[slot]:
                        self.stale += 1
        return None

    def wait(self, timeout=None):
        """The next event, waiting as ``wait`` says, at most ``timeout`` seconds (None: until there is one)."""
        ev = self.poll()
        if ev is not None:
            return ev
        start = time.monotonic()
        while True:
            ev = self.poll()
            if ev is not None:
                return ev
            now = time.monotonic()
            if now - self.last_check >= CHECK_EVERY:
                ev = self._check_writer()
                if ev is not None:
                    return ev
            idle = now - start
            if timeout is not None and idle >= timeout:
                return None
            left = CHECK_EVERY if timeout is None else min(CHECK_EVERY, timeout - idle)
            if self.wait_mode == "sleep":
                time.sleep(min(0.001, left))
            elif self.wait_mode == "park" or (self.wait_mode == "hybrid" and idle >= 0.0001):
                self._park(left)

    def __iter__(self):
        while True:
            yield self.wait()

    def close(self):
        self.region.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _start(self, strict):
        r = self.region
        n = len(r.instruments)
        self.want = None
        if self.tokens or self.symbols:
            self.want = [False] * n
            for t in self.tokens:
                s = r.by_token.get(t)
                if s is None and strict:
                    raise RegionError(f"token {t} is not in the region's instrument table")
                if s is not None:
                    self.want[s] = True
            for sym in self.symbols:
                s = self.slot_of_symbol(sym)
                if s is None and strict:
                    raise RegionError(f"symbol {sym!r} is not in the region's instrument table")
                if s is not None:
                    self.want[s] = True
        self.last_seq = [0] * n
        self.snap_seq = [0] * n
        self.pos = [r.write_pos(i) for i in range(len(r.ring_names))]  # before the last values
        self.phase = 0 if self.snapshot else None
        self.next_ring = 0
        self.down_reported = False
        self.last_check = time.monotonic()

    def _wanted(self, slot):
        return self.want is None or self.want[slot]

    def _next_snapshot(self):
        r = self.region
        for slot in range(self.phase, len(self.last_seq)):
            if not self._wanted(slot):
                continue
            raw = self._last_value(slot)
            if raw is None:
                continue  # its writer died mid-write: nothing newer will come
            got_slot, seq = struct.unpack_from("<4xIQ", raw)
            if seq == 0 or got_slot != slot or seq <= self.last_seq[slot]:
                continue
            prev, self.last_seq[slot] = self.last_seq[slot], seq
            self.snap_seq[slot] = seq
            self.phase = slot + 1
            return Tick(raw, snapshot=True, prev_seq=prev)
        return None

    def _last_value(self, slot):
        """A consistent read of a last-value cell. One mid-write stays so while its writer is
        descheduled (keep trying, yielding) or if it died there (give up once it is known gone)."""
        r = self.region
        cell = r.lv_off + slot * CELL_SIZE
        tries = 0
        while True:
            v1 = r.q[cell // 8]
            if not v1 & 1:
                data = r.mm[cell + 8:cell + 8 + TICK_SIZE]
                if r.q[cell // 8] == v1:
                    return data
            tries += 1
            if tries % 64 == 0:
                if self._writer_down() is not None:
                    return None
                time.sleep(0)

    def _writer_down(self):
        r = self.region
        if r.state() == STATE_CLOSED:
            return WriterDown("closed")
        age = time.monotonic_ns() - r.heartbeat_ns()  # the server beats CLOCK_MONOTONIC
        return WriterDown("silent", age // 1_000_000) if age > SILENT_AFTER_NS else None

    def _lapped(self, ring):
        start = self.pos[ring]
        head = max(self.region.write_pos(ring), start + 1)
        self.pos[ring] = head
        self.lost += head - start
        self.phase = 0
        return Gap(ring, self.region.ring_names[ring], start, head)

    def _ready(self):
        r = self.region
        if self.phase is not None:
            return True
        for ring, p in enumerate(self.pos):
            rec = r.ring(ring) + RING_HEADER_SIZE + (p & r.mask) * CELL_SIZE
            if r.q[rec // 8] >= 2 * p + 2:
                return True
        return False

    def _park(self, seconds):
        r, f = self.region, self._futex
        if r.state() != STATE_LIVE:
            time.sleep(seconds)  # closed: nobody will wake us; nap until a new server appears
            return
        bit = r.park_slot % 32
        f.set_bit(r.parked_addr, bit)  # a system call: a full barrier too
        v = r.wait_i[WAIT_WAKE_SEQ // 4]
        try:
            if not self._ready() and seconds > 0:
                f.wait(r.wake_addr, v, seconds)
        finally:
            f.clear_bit(r.parked_addr, bit)

    def _check_writer(self):
        self.last_check = time.monotonic()
        r = self.region
        try:
            st = os.stat(self.path)
            at_path = (st.st_dev, st.st_ino)
        except OSError:
            at_path = None
        if at_path is not None and at_path != r.dev_ino:
            try:
                new = _Region(self.path, self.parks, owner=r.owner)
            except (RegionError, OSError, ValueError) as e:
                if not self.down_reported:
                    self.down_reported = True
                    return WriterDown("unusable", str(e))
                new = None
            if new is not None and new.epoch != r.epoch:
                r.close()
                self.region = new
                self._start(strict=False)
                return Reattached(new.epoch)
            if new is not None:
                new.close()
        down = self._writer_down()
        if down is None:
            self.down_reported = False
            return None
        if self.down_reported:
            return None
        self.down_reported = True
        return down


def _tick_json(reader, t):
    ins = reader.instrument(t.slot)
    p = ins.price
    out = {"type": "market_data", "token": t.token, "symbol": ins.symbol, "exchange": ins.exchange, "seq": t.seq,
           "ts": t.ts_ns}
    if t.snapshot:
        out["snapshot"] = True
        out["prev_seq"] = t.prev_seq
    out["data"] = {"ltp": p(t.ltp), "ltq": t.ltq, "volume": t.volume, "open": p(t.open), "high": p(t.high),
                   "low": p(t.low), "close": p(t.close), "bid": p(t.bid), "ask": p(t.ask), "bid_qty": t.bid_qty,
                   "ask_qty": t.ask_qty, "oi": t.oi,
                   "depth": {"buy": [{"price": p(a), "quantity": b, "orders": c} for a, b, c in t.bids],
                             "sell": [{"price": p(a), "quantity": b, "orders": c} for a, b, c in t.asks]}}
    return out


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="Print the ticks of a tickcast shared-memory region.")
    ap.add_argument("shm", help="the server's --shm name, or the region's path")
    ap.add_argument("--tokens", default="", help="only these tokens, comma-separated")
    ap.add_argument("--symbols", default="", help="only these symbols (SYMBOL or EXCHANGE:SYMBOL), comma-separated")
    ap.add_argument("--wait", default="park", choices=["spin", "sleep", "park", "hybrid"])
    ap.add_argument("--count", type=int, help="stop after this many ticks (current values included)")
    ap.add_argument("--no-snapshot", action="store_true", help="only live ticks")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--timeout", type=float, help="give up after this many seconds without an event")
    ap.add_argument("--bench", type=int, metavar="N",
                    help="read N live ticks as fast as possible and print the cost per tick")
    a = ap.parse_args(argv)
    tokens = [int(t) for t in a.tokens.split(",") if t]
    symbols = [s for s in a.symbols.split(",") if s]
    try:
        reader = Reader(a.shm, tokens=tokens, symbols=symbols, wait=a.wait, snapshot=not a.no_snapshot)
    except RegionError as e:
        print(f"tickcast_shm: {e}", file=sys.stderr)
        return 2
    with reader:
        if a.bench:
            return _bench(reader, a.bench)
        printed = 0
        while a.count is None or printed < a.count:
            ev = reader.wait(a.timeout)
            if ev is None:
                print(f"tickcast_shm: nothing for {a.timeout} s", file=sys.stderr)
                return 1
            if isinstance(ev, Tick):
                printed += 1
                if a.json:
                    print(json.dumps(_tick_json(reader, ev)), flush=True)
                else:
                    ins = reader.instrument(ev.slot)
                    tag = "  (current value)" if ev.snapshot else f"  +{(time.time_ns() - ev.ts_recv_ns) / 1e3:.1f}us"
                    print(f"{ins.exchange}:{ins.symbol:<20} {ins.price(ev.ltp)}  seq {ev.seq}{tag}", flush=True)
            elif a.json:
                d = {"type": {Gap: "gap", WriterDown: "writer_down", Reattached: "reattached"}[type(ev)]}
                d.update({k: getattr(ev, k) for k in ev.__slots__})
                if isinstance(ev, Gap):
                    d["lost"] = ev.lost
                print(json.dumps(d), flush=True)
            else:
                print(f"tickcast_shm: {ev!r}", file=sys.stderr, flush=True)
    return 0


def _bench(reader, n):
    """Read n live ticks and report the Python cost per tick (the time spent in poll() returning a tick)."""
    got, busy, lost0 = 0, 0, reader.lost
    while got < n:
        t0 = time.perf_counter_ns()
        ev = reader.poll()
        dt = time.perf_counter_ns() - t0
        if isinstance(ev, Tick) and not ev.snapshot:
            got += 1
            busy += dt
        elif ev is None:
            reader.wait(1.0)
    print(json.dumps({"ticks": got, "ns_per_tick": busy / max(got, 1), "lost": reader.lost - lost0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
