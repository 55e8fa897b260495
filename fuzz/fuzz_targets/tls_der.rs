//! The subject common-name reader of client certificates (`uag_gateway::tls::common_name`,
//! a small DER walker): never panics; a name it returns is a substring of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(cn) = uag_gateway::tls::common_name(data) {
        let needle = cn.as_bytes();
        assert!(
            needle.is_empty() || data.windows(needle.len()).any(|w| w == needle),
            "common name {cn:?} is not in the certificate"
        );
    }
});
