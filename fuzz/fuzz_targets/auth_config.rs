//! The operator's files: the auth file (`Auth::parse`) and the flags file
//! (`--config`, TOML → `Flags` → `Config::from_flags`).
//!
//! Input: byte 0 even → auth file, odd → config file; the rest is the text.
//! Checks: no panic; an auth file that parses requires keys and refuses a
//! key that is not in it; a config file's flags merged over themselves are
//! unchanged (`Flags::over`) and validate the same. Feed specs are left out
//! of `from_flags` here: they resolve host names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickcast::auth::{role, Auth};
use tickcast::config::{Config, Flags, Sources};

fuzz_target!(|data: &[u8]| {
    let [pick, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    if pick % 2 == 0 {
        let Ok(auth) = Auth::parse(text) else { return };
        assert!(auth.required());
        assert!(auth.check(None, role::SUBSCRIBE).is_err());
        // Not a key of the file: the file holds digests of its keys only.
        assert!(auth.check(Some("not-a-key-in-any-file-\u{1}"), role::SUBSCRIBE).is_err());
    } else {
        let Ok(mut flags) = toml::from_str::<Flags>(text) else { return };
        flags.feed = None;
        let given = Sources::default();
        let once = Config::from_flags(flags.clone(), &given).map(|c| format!("{c:?}")).map_err(|e| e.to_string());
        let twice =
            Config::from_flags(flags.clone().over(flags), &given).map(|c| format!("{c:?}")).map_err(|e| e.to_string());
        assert_eq!(once, twice);
    }
});
