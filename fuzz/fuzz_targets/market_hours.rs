//! The market-hours grammar (`--market-hours` strings and the config
//! file's `[market-hours]` table).
//!
//! Input: byte 0 even → a string spec, odd → a TOML table; bytes 1..9 are
//! an instant. Checks: what parses prints to a string that parses back to
//! the same schedule (`Display` is the string form); the next transition
//! after the instant is later and flips open/closed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::market::{HoursTable, Schedule};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let now_ns = u64::from_le_bytes(data[1..9].try_into().unwrap()) % (4_102_444_800 * 1_000_000_000); // before 2100
    let Ok(text) = std::str::from_utf8(&data[9..]) else { return };
    let parsed = if data[0] % 2 == 0 {
        Schedule::parse(text)
    } else {
        let Ok(t) = toml::from_str::<HoursTable>(text) else { return };
        Schedule::from_table(&t)
    };
    let Ok(s) = parsed else { return };
    let printed = s.to_string();
    let again = Schedule::parse(&printed).unwrap_or_else(|e| panic!("`{printed}` does not parse back: {e:#}"));
    assert_eq!(again, s, "`{printed}` parses to another schedule");
    let open = s.is_open(now_ns);
    if let Some(t) = s.next_transition(now_ns) {
        assert!(t > now_ns, "next transition {t} not after {now_ns}");
        assert_ne!(s.is_open(t), open, "nothing changes at the next transition {t}");
    }
    let _ = s.local(now_ns);
});
