//! The client request parser (`RequestParser`) on arbitrary bytes; see `ringkv_fuzz::resp`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| ringkv_fuzz::resp::check(input));
