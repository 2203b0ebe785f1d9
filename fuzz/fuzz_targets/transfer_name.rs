//! The receiver's sanitising of offered names (issue 16): `transfer::name::sanitise_path` and `sanitise_name`
//! on the input as text (a refusal the text calls for, or a path of normal, bounded, clean components that
//! stays under its directory and sanitises to itself), and `unused_name`'s numbering. The checks are in
//! `multiproto_fuzz::transfer_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproto_fuzz::transfer_checks::name(data);
});
