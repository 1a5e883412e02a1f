//! How a payload is *stored* (issue 18 item 3): the canonical JSON text as
//! appended, or that text compressed into a zstd frame with a dictionary
//! shipped in this binary. Only the stored form changes: reading a row gives
//! back exactly the text appended, so the canonical bytes, the hash and the
//! chain of every store — written before or after this existed — are the
//! same.
//!
//! The two forms tell themselves apart by their first bytes: a zstd frame
//! starts with the magic number `28 B5 2F FD`, and a JSON text can never
//! start with `(` (0x28). The writer stores the frame only when it is
//! shorter than the text (a tiny payload such as `{}` stays text). Rows
//! written before the migration stay text; both forms are read everywhere.
//!
//! The dictionary (`dictionaries/payload-1.zdict`, 32 KiB) was trained with
//! `zstd --train --maxdict=32768 --dictID=1263092225` on the 38,581 payloads
//! of `kiban simulate --insurers 20 --persons 2000 --offices 200 --seed 1`;
//! docs/store.md "Compact rows" has the measured sizes. Each frame names its
//! dictionary by that id: a later dictionary gets a new id and file, and the
//! old ones stay in the binary for as long as rows compressed with them may
//! exist. A frame naming a dictionary this binary does not have is reported
//! as a corrupted row, never guessed at.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The first four bytes of every zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The payload dictionary in use for new rows.
static DICTIONARY_1: &[u8] = include_bytes!("../dictionaries/payload-1.zdict");

/// Its id, as written in every frame compressed with it.
pub(crate) const DICTIONARY_1_ID: u32 = 1_263_092_225;

/// zstd's level for new rows: level 3 (zstd's default) is within 5 % of
/// level 19 on these payloads with the dictionary, at a fraction of the CPU.
const LEVEL: i32 = 3;

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static DICTIONARY: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| EncoderDictionary::copy(DICTIONARY_1, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static DICTIONARY: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| DecoderDictionary::copy(DICTIONARY_1))
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A payload as it goes into a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored<'a> {
    /// The text as appended (compression would not make it shorter).
    Text(&'a str),
    /// A zstd frame of the text, compressed with the dictionary.
    Compressed(Vec<u8>),
}

/// The stored form of `payload`: compressed when that is shorter.
pub(crate) fn store(payload: &str) -> Stored<'_> {
    let compressed = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(compressor) => compressor,
            None => cell.insert(Compressor::with_prepared_dictionary(encoder_dictionary()).ok()?),
        };
        compressor.compress(payload.as_bytes()).ok()
    });
    match compressed {
        Some(frame) if frame.len() < payload.len() => Stored::Compressed(frame),
        _ => Stored::Text(payload),
    }
}

/// Whether stored bytes are a zstd frame (else they are the text itself).
pub(crate) fn is_compressed(stored: &[u8]) -> bool {
    stored.starts_with(&ZSTD_MAGIC)
}

/// Appends the payload text of `stored` (either form) to `out`. The error
/// says why a frame does not decompress: a row changed outside kiban, or
/// compressed with a dictionary this binary does not have.
pub(crate) fn load_into(stored: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if !is_compressed(stored) {
        out.extend_from_slice(stored);
        return Ok(());
    }
    let size = match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(size)) if size <= kiban_events::envelope::PAYLOAD_BYTES_MAX as u64 => size as usize,
        _ => return Err("the stored payload frame has no valid size".to_owned()),
    };
    match zstd::zstd_safe::get_dict_id_from_frame(stored) {
        Some(id) if id.get() == DICTIONARY_1_ID => {}
        Some(id) => {
            return Err(format!(
                "the stored payload needs dictionary {id}, not in this build"
            ));
        }
        None => return Err("the stored payload frame names no dictionary".to_owned()),
    }
    let start = out.len();
    out.reserve(size);
    let written = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match cell.as_mut() {
            Some(decompressor) => decompressor,
            None => cell.insert(
                Decompressor::with_prepared_dictionary(decoder_dictionary())
                    .map_err(|e| e.to_string())?,
            ),
        };
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        decompressor
            .decompress_to_buffer(stored, &mut cursor)
            .map_err(|e| format!("the stored payload does not decompress: {e}"))
    })?;
    if written != size || out.len() != start + size {
        out.truncate(start);
        return Err("the stored payload frame has the wrong size".to_owned());
    }
    Ok(())
}

/// The payload text of `stored` (either form), as the owned string the
/// envelope carries.
pub(crate) fn load(stored: Vec<u8>) -> Result<String, String> {
    let text = if is_compressed(&stored) {
        let mut out = Vec::new();
        load_into(&stored, &mut out)?;
        out
    } else {
        stored
    };
    String::from_utf8(text).map_err(|_| "the stored payload is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_comes_back_exactly_from_either_form() {
        let payloads = [
            r#"{"institution":"2100015107","requested_on":"2026-06-21"}"#,
            r#"{"opinion":{"sha256":"7f9a897109680b9cec352a468bcd646c32ab14432db267096ef68f49cb46a500","media_type":"application/pdf","size_bytes":108658},"received_on":"2026-11-18"}"#,
            "{}",
            r#"{"name":"介護 太郎","n":1}"#,
        ];
        for payload in payloads {
            let stored = store(payload);
            let bytes = match &stored {
                Stored::Text(text) => text.as_bytes().to_vec(),
                Stored::Compressed(frame) => {
                    assert!(frame.len() < payload.len());
                    assert!(is_compressed(frame));
                    frame.clone()
                }
            };
            assert_eq!(load(bytes.clone()).unwrap(), payload);
            let mut out = b"prefix".to_vec();
            load_into(&bytes, &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], payload.as_bytes());
        }
    }

    #[test]
    fn typical_payloads_are_compressed_and_tiny_ones_stay_text() {
        let typical = r#"{"institution":"2100015107","requested_on":"2026-06-21"}"#;
        match store(typical) {
            Stored::Compressed(frame) => assert!(
                frame.len() * 10 < typical.len() * 7,
                "{} of {} bytes",
                frame.len(),
                typical.len()
            ),
            Stored::Text(_) => panic!("a typical payload was not compressed"),
        }
        assert_eq!(store("{}"), Stored::Text("{}"));
    }

    #[test]
    fn a_frame_that_fails_leaves_what_came_before_it_untouched() {
        let payload = format!(r#"{{"notes":"{}"}}"#, "介護の記録 ".repeat(400));
        let Stored::Compressed(frame) = store(&payload) else {
            panic!("not compressed")
        };
        for damaged in [
            frame[..frame.len() / 2].to_vec(),
            frame[..frame.len() - 3].to_vec(),
        ] {
            let mut out = b"prefix".to_vec();
            assert!(load_into(&damaged, &mut out).is_err());
            assert_eq!(out, b"prefix", "{} bytes left behind", out.len());
        }
    }

    #[test]
    fn a_damaged_or_foreign_frame_is_an_error_not_a_guess() {
        let Stored::Compressed(mut frame) =
            store(r#"{"scheduled_on":"2026-04-06","x":"yyyyyyyy"}"#)
        else {
            panic!("not compressed")
        };
        let last = frame.len() - 1;
        frame[last] ^= 0xFF;
        assert!(load(frame).is_err());
        let foreign = zstd::bulk::compress(br#"{"scheduled_on":"2026-04-06"}"#, 3).unwrap();
        let error = load(foreign).unwrap_err();
        assert!(error.contains("dictionary"), "{error}");
    }
}
