//! Fuzzes the `docker save` archive reader: any input (tar, gzip, zstd or
//! garbage) is read or refused with an error, never a panic, and a refused
//! or accepted archive never yields a member path outside the archive.
#![no_main]

use std::io::Cursor;

use berth::archive::formats::images;
use berth::archive::members::Members;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(members) = Members::read_from(Box::new(Cursor::new(data.to_vec())), "fuzz-input", None) else {
        return;
    };
    for path in members.paths() {
        assert!(!path.starts_with('/'), "absolute member {path:?}");
        assert!(!path.split('/').any(|c| c == ".."), "escaping member {path:?}");
    }
    let _ = images(&members);
});
