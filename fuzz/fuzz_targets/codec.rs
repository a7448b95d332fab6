//! The line codec against a reference model of the framing rules.
//!
//! Input: the first 4 bytes choose read sizes (0: one `Interrupted` read; else
//! 1..=255 bytes, times 8 if the byte's top bit is set), the rest is what the
//! peer sends. `LineConn::read_line` must return exactly what
//! `fuzz_support::reference_read` says, each line UTF-8, <= 1024 bytes, without
//! LF, and lines plus terminators must be a prefix of the input.
#![no_main]

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(4);
    let chunks = data[..split]
        .iter()
        .map(|&b| match b {
            0 => 0,
            b if b & 0x80 != 0 => usize::from(b & 0x7f).max(1) * 8,
            b => usize::from(b),
        })
        .collect();
    if let Err(e) = fuzz_support::check_codec(&data[split..], chunks) {
        panic!("{e}");
    }
});
