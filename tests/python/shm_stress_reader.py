"""The Python reader under the multi-process stress of tests/shm_stress.rs:
every field of every tick is derived from (slot, seq), so a torn record
shows; every instrument's seq goes up by one per tick, so a hole shows
unless a gap was reported and a current value says where it resumed.

Usage: shm_stress_reader.py REGION WAIT RECORDS
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from tickcast_shm import Gap, Reader, Tick, WriterDown  # noqa: E402

M64, M32 = (1 << 64) - 1, (1 << 32) - 1


def expect(t):
    s, q = t.slot, t.seq
    want = {"ts_ns": q ^ (s << 40), "ts_recv_ns": (q * 31) & M64, "ltp": q * 7 + s, "volume": q + s, "bid": q,
            "ask": -q, "oi": ((q << 7) | (q >> 57)) & M64, "depth_levels": 5}
    for k, v in want.items():
        assert getattr(t, k) == v, f"torn record: {k} = {getattr(t, k)}, want {v} (slot {s}, seq {q})"
    for i in range(5):
        assert t.bids[i][0] == q + i and t.asks[i][1] == (q + i) & M32, f"torn depth (slot {s}, seq {q})"


def main(path, wait, records):
    r = Reader(path, wait=wait)
    print("ready", flush=True)
    last = [0] * len(r.instruments)
    ticks = gaps = 0
    closed = False
    while True:
        ev = r.poll() if closed else r.wait(30)
        if ev is None:
            assert closed, "the writer went quiet without closing"
            break
        if isinstance(ev, Tick):
            expect(ev)
            if ev.snapshot:
                assert ev.prev_seq == last[ev.slot], "a current value names the last seq given"
                assert ev.seq > last[ev.slot]
            else:
                assert ev.seq == last[ev.slot] + 1, f"slot {ev.slot}: a hole without a gap notice"
            last[ev.slot] = ev.seq
            ticks += 1
        elif isinstance(ev, Gap):
            assert ev.lost >= r.region.capacity, f"lapped means a ring behind: {ev!r}"
            gaps += 1
        elif isinstance(ev, WriterDown) and ev.reason == "closed":
            closed = True
        else:
            raise AssertionError(f"unexpected {ev!r}")
    n = len(last)
    for s, got in enumerate(last):
        assert got == records // n + (1 if s < records % n else 0), f"slot {s} ends at {got}"
    print(f'{{"ticks":{ticks},"gaps":{gaps},"lost":{r.lost}}}', flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
