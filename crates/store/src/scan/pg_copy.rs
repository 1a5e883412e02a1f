//! A parser of PostgreSQL's `COPY … TO STDOUT (FORMAT binary)` output for
//! the columns of [`POSTGRES_EVENT_COLUMNS`](crate::backend::POSTGRES_EVENT_COLUMNS), fed
//! chunk by chunk as the server sends it (a tuple may span any number of
//! chunks, a chunk any number of tuples).
//!
//! The format (PostgreSQL documentation, "COPY", "Binary Format"): an
//! 11-byte signature, a 32-bit flags field, a 32-bit header extension length
//! and that many bytes; then tuples, each a 16-bit field count and per field
//! a 32-bit length (-1 for NULL) and that many bytes; then a field count of
//! -1 as the trailer. All integers are big-endian. Integers, UUIDs and
//! timestamps arrive in their binary send format, text and bytea verbatim.
//!
//! Output that breaks the format (a wrong signature, a tuple with another
//! number of fields, a NULL in a NOT NULL column, a value of the wrong size,
//! output that ends before its trailer) is an error, never a panic: the
//! bytes come from a server, and a parser that trusted them would index out
//! of bounds on a truncated stream.

use std::ops::Range;

use uuid::Uuid;

use super::{RowBatch, ScannedRow};
use crate::error::{Error, Result};

/// The signature that opens binary COPY output.
const PG_COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Columns of `EVENT_COLUMNS`, so fields per tuple.
const EVENT_FIELDS: usize = 13;

/// Header flag bits 16–31 denote critical format changes; a reader must
/// refuse output with one it does not know set (bit 16 would add an OID
/// column to every tuple).
const CRITICAL_FLAGS_MASK: u32 = 0xffff_0000;

/// Consumed input kept before the buffer is compacted: moving the unread
/// tail to the front costs a copy, so it happens once per this many bytes
/// rather than once per tuple.
const COMPACT_AFTER_BYTES: usize = 1 << 20;

/// Where in the output the parser is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the end of the header.
    #[default]
    Header,
    /// Between tuples.
    Tuples,
    /// After the trailer.
    Done,
}

/// The parser of one COPY's output; [`CopyParser::reset`] readies it for
/// the next.
#[derive(Debug, Default)]
pub(super) struct CopyParser {
    pending: Vec<u8>,
    offset: usize,
    stage: Stage,
}

/// The byte ranges of one tuple's fields (`None` for NULL) and the tuple's
/// length.
type TupleSpans = ([Option<Range<usize>>; EVENT_FIELDS], usize);

impl CopyParser {
    /// Forgets everything fed: the next byte fed is a new COPY's first.
    pub(super) fn reset(&mut self) {
        self.pending.clear();
        self.offset = 0;
        self.stage = Stage::Header;
    }

    /// Appends the next chunk of output.
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        if self.offset > 0 && self.offset == self.pending.len() {
            self.pending.clear();
            self.offset = 0;
        } else if self.offset > COMPACT_AFTER_BYTES {
            self.pending.drain(..self.offset);
            self.offset = 0;
        }
        self.pending.extend_from_slice(chunk);
    }

    /// The next complete tuple, its variable-length fields copied into
    /// `batch`; `None` when more input is needed or the trailer was read.
    pub(super) fn next_row(&mut self, batch: &mut RowBatch) -> Result<Option<ScannedRow>> {
        loop {
            let input = &self.pending[self.offset..];
            match self.stage {
                Stage::Header => {
                    let Some(length) = header_len(input)? else {
                        return Ok(None);
                    };
                    self.offset += length;
                    self.stage = Stage::Tuples;
                }
                Stage::Tuples => {
                    let Some(fields) = read_i16(input, 0) else {
                        return Ok(None);
                    };
                    if fields == -1 {
                        self.offset += 2;
                        self.stage = Stage::Done;
                        continue;
                    }
                    if usize::try_from(fields) != Ok(EVENT_FIELDS) {
                        return Err(protocol("a tuple without the 13 columns of events"));
                    }
                    let Some((spans, length)) = tuple_spans(input)? else {
                        return Ok(None);
                    };
                    let row = decode_row(input, &spans, batch)?;
                    self.offset += length;
                    return Ok(Some(row));
                }
                Stage::Done if input.is_empty() => return Ok(None),
                Stage::Done => return Err(protocol("data after the trailer")),
            }
        }
    }

    /// Checks, once the output has ended, that it ended where it should:
    /// after the trailer, with every byte parsed. Output cut short (a lost
    /// connection mid-COPY) would otherwise pass for a shorter page.
    pub(super) fn finish(&self) -> Result<()> {
        match self.stage {
            Stage::Done if self.offset == self.pending.len() => Ok(()),
            Stage::Done => Err(protocol("data after the trailer")),
            Stage::Header => Err(protocol("the output ended inside the header")),
            Stage::Tuples => Err(protocol("the output ended before its trailer")),
        }
    }
}

/// The error for output that breaks the format.
fn protocol(reason: &str) -> Error {
    Error::Unavailable(format!(
        "unexpected binary COPY output from PostgreSQL: {reason}"
    ))
}

/// The header's length when `input` holds all of it.
fn header_len(input: &[u8]) -> Result<Option<usize>> {
    let signature = PG_COPY_SIGNATURE.len();
    let (Some(flags), Some(extension)) =
        (read_i32(input, signature), read_i32(input, signature + 4))
    else {
        return Ok(None);
    };
    if &input[..signature] != PG_COPY_SIGNATURE {
        return Err(protocol("no signature"));
    }
    if flags as u32 & CRITICAL_FLAGS_MASK != 0 {
        return Err(protocol("an unknown critical header flag"));
    }
    let extension =
        usize::try_from(extension).map_err(|_| protocol("a negative header extension length"))?;
    let length = signature + 8 + extension;
    Ok((input.len() >= length).then_some(length))
}

/// The fields of the tuple at the start of `input` (its field count
/// already checked) when `input` holds all of it. The spans are found
/// before anything is copied, so a tuple split across chunks is copied once,
/// when complete.
fn tuple_spans(input: &[u8]) -> Result<Option<TupleSpans>> {
    let mut spans: [Option<Range<usize>>; EVENT_FIELDS] = Default::default();
    let mut at = 2;
    for span in &mut spans {
        let Some(length) = read_i32(input, at) else {
            return Ok(None);
        };
        at += 4;
        if length == -1 {
            continue;
        }
        let length = usize::try_from(length).map_err(|_| protocol("a negative field length"))?;
        let end = at.saturating_add(length);
        if input.len() < end {
            return Ok(None);
        }
        *span = Some(at..end);
        at = end;
    }
    Ok(Some((spans, at)))
}

/// One tuple's values, in `EVENT_COLUMNS` order.
fn decode_row(
    input: &[u8],
    spans: &[Option<Range<usize>>; EVENT_FIELDS],
    batch: &mut RowBatch,
) -> Result<ScannedRow> {
    let field = |i: usize| spans[i].clone().map(|range| &input[range]);
    let int8 = |i: usize| {
        field(i)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
            .ok_or_else(|| protocol("a bigint or timestamp column"))
    };
    let uuid = |i: usize| {
        field(i)
            .and_then(|b| Uuid::from_slice(b).ok())
            .ok_or_else(|| protocol("a uuid column"))
    };
    let bytes = |i: usize| field(i).ok_or_else(|| protocol("a NULL in a NOT NULL column"));
    let schema_version = field(5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| i64::from(i32::from_be_bytes(b)))
        .ok_or_else(|| protocol("an integer column"))?;
    let causation_id = match field(10) {
        None => None,
        Some(_) => Some(uuid(10)?),
    };
    let position = int8(0)?;
    Ok(ScannedRow {
        position,
        version: int8(2)?,
        schema_version,
        occurred_at_micros: int8(6)?.saturating_add(PG_EPOCH_MICROS),
        recorded_at_micros: int8(7)?.saturating_add(PG_EPOCH_MICROS),
        event_id: uuid(3)?,
        correlation_id: uuid(9)?,
        causation_id,
        stream: batch.push_bytes(bytes(1)?),
        event_type: batch.push_bytes(bytes(4)?),
        actor: batch.push_bytes(bytes(8)?),
        payload: batch.push_payload(position, bytes(11)?)?,
        hash: batch.push_bytes(bytes(12)?),
    })
}

/// The big-endian `i16` at `at`, when `input` holds it.
fn read_i16(input: &[u8], at: usize) -> Option<i16> {
    let bytes = input.get(at..at.checked_add(2)?)?;
    Some(i16::from_be_bytes(bytes.try_into().ok()?))
}

/// The big-endian `i32` at `at`, when `input` holds it.
fn read_i32(input: &[u8], at: usize) -> Option<i32> {
    let bytes = input.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use kiban_events::Hash;
    use proptest::prelude::*;

    use super::*;

    /// One row as PostgreSQL sends it: the raw values of the 13 columns.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Row {
        position: i64,
        stream: Vec<u8>,
        version: i64,
        event_id: u128,
        event_type: Vec<u8>,
        schema_version: i32,
        occurred_at: i64,
        recorded_at: i64,
        actor: Vec<u8>,
        correlation_id: u128,
        causation_id: Option<u128>,
        payload: Vec<u8>,
        hash: Vec<u8>,
    }

    impl Row {
        /// The row's 13 fields in `EVENT_COLUMNS` order, `None` for NULL.
        fn fields(&self) -> [Option<Vec<u8>>; EVENT_FIELDS] {
            let uuid = |id: u128| Some(Uuid::from_u128(id).as_bytes().to_vec());
            [
                Some(self.position.to_be_bytes().to_vec()),
                Some(self.stream.clone()),
                Some(self.version.to_be_bytes().to_vec()),
                uuid(self.event_id),
                Some(self.event_type.clone()),
                Some(self.schema_version.to_be_bytes().to_vec()),
                Some(self.occurred_at.to_be_bytes().to_vec()),
                Some(self.recorded_at.to_be_bytes().to_vec()),
                Some(self.actor.clone()),
                uuid(self.correlation_id),
                self.causation_id.and_then(uuid),
                Some(self.payload.clone()),
                Some(self.hash.clone()),
            ]
        }

        /// What the parser made of it, read back from the batch.
        fn scanned(batch: &RowBatch, row: &ScannedRow) -> Row {
            let micros = |at: i64| at - PG_EPOCH_MICROS;
            Row {
                position: row.position,
                stream: batch.field(&row.stream).to_vec(),
                version: row.version,
                event_id: row.event_id.as_u128(),
                event_type: batch.field(&row.event_type).to_vec(),
                schema_version: i32::try_from(row.schema_version).unwrap(),
                occurred_at: micros(row.occurred_at_micros),
                recorded_at: micros(row.recorded_at_micros),
                actor: batch.field(&row.actor).to_vec(),
                correlation_id: row.correlation_id.as_u128(),
                causation_id: row.causation_id.map(|id| id.as_u128()),
                payload: batch.field(&row.payload).to_vec(),
                hash: batch.field(&row.hash).to_vec(),
            }
        }
    }

    fn push_field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                out.extend_from_slice(&i32::try_from(bytes.len()).unwrap().to_be_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// One tuple of the given fields, as PostgreSQL writes it.
    fn tuple(fields: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = i16::try_from(fields.len()).unwrap().to_be_bytes().to_vec();
        for field in fields {
            push_field(&mut out, field.as_deref());
        }
        out
    }

    /// The header with a header extension of `extension`.
    fn header(extension: &[u8]) -> Vec<u8> {
        let mut out = PG_COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        push_field(&mut out, Some(extension));
        out
    }

    /// A whole COPY's output: header, `rows`, trailer.
    fn encode(extension: &[u8], rows: &[Row]) -> Vec<u8> {
        let mut out = header(extension);
        for row in rows {
            out.extend(tuple(&row.fields()));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// Feeds `chunks` one by one, taking every row as it completes, then
    /// checks the end.
    fn parse<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Row>> {
        let mut parser = CopyParser::default();
        let mut batch = RowBatch::default();
        for chunk in chunks {
            parser.feed(chunk);
            while let Some(row) = parser.next_row(&mut batch)? {
                batch.rows.push(row);
            }
        }
        parser.finish()?;
        Ok(batch
            .rows()
            .iter()
            .map(|row| Row::scanned(&batch, row))
            .collect())
    }

    /// `bytes` cut at the given lengths (each taken modulo what is left).
    fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        for cut in cuts {
            let (chunk, after) = rest.split_at(cut % (rest.len() + 1));
            chunks.push(chunk);
            rest = after;
        }
        chunks.push(rest);
        chunks
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..=max)
    }

    /// Payloads: mostly small, sometimes empty, sometimes larger than the
    /// chunks PostgreSQL sends and than the parser's compaction threshold.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => bytes(64),
            1 => Just(Vec::new()),
            1 => bytes(70_000),
            1 => (0u8..=255, (COMPACT_AFTER_BYTES + 1)..(COMPACT_AFTER_BYTES + 4096))
                .prop_map(|(byte, length)| vec![byte; length]),
        ]
    }

    fn row(payload: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Row> {
        // Timestamps the parser can move to the Unix epoch without
        // saturating, so that the test can move them back.
        let timestamp = || i64::MIN..=(i64::MAX - PG_EPOCH_MICROS);
        let numbers = (
            any::<i64>(),
            any::<i64>(),
            any::<u128>(),
            any::<i32>(),
            timestamp(),
            timestamp(),
            any::<u128>(),
            any::<Option<u128>>(),
        );
        let texts = (bytes(40), bytes(40), bytes(40), payload, bytes(32));
        (numbers, texts).prop_map(|(numbers, texts)| {
            let (
                position,
                version,
                event_id,
                schema_version,
                occurred_at,
                recorded_at,
                correlation_id,
                causation_id,
            ) = numbers;
            let (stream, event_type, actor, payload, hash) = texts;
            Row {
                position,
                stream,
                version,
                event_id,
                event_type,
                schema_version,
                occurred_at,
                recorded_at,
                actor,
                correlation_id,
                causation_id,
                payload,
                hash,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any rows, cut into any chunks, come back as they were sent.
        #[test]
        fn rows_come_back_whatever_the_chunking(
            rows in prop::collection::vec(row(payload()), 0..6),
            extension in bytes(16),
            cuts in prop::collection::vec(0usize..100_000, 0..24),
        ) {
            let output = encode(&extension, &rows);
            prop_assert_eq!(parse(chunked(&output, &cuts)).unwrap(), rows);
        }

        /// Small rows split into two chunks at every offset: each field
        /// boundary and each byte of a length lands on a chunk boundary.
        #[test]
        fn rows_come_back_split_at_every_offset(
            rows in prop::collection::vec(row(bytes(8)), 1..4),
        ) {
            let output = encode(&[], &rows);
            for at in 0..=output.len() {
                let (head, tail) = output.split_at(at);
                prop_assert_eq!(parse([head, tail]).unwrap(), rows.clone(), "split at {}", at);
            }
        }

        /// Output cut short anywhere is an error, never a panic nor a
        /// shorter page.
        #[test]
        fn truncated_output_is_an_error(
            rows in prop::collection::vec(row(bytes(16)), 0..4),
            cuts in prop::collection::vec(0usize..512, 0..8),
        ) {
            let output = encode(&[], &rows);
            for length in 0..output.len() {
                prop_assert!(parse(chunked(&output[..length], &cuts)).is_err(), "cut at {}", length);
            }
        }

        /// Garbage is an error, never a panic.
        #[test]
        fn garbage_is_an_error(
            garbage in bytes(512),
            cuts in prop::collection::vec(0usize..512, 0..8),
        ) {
            prop_assert!(parse(chunked(&garbage, &cuts)).is_err());
        }

        /// A valid output with one byte changed never panics; whatever it
        /// parses to, it is this result or an error.
        #[test]
        fn a_changed_byte_never_panics(
            rows in prop::collection::vec(row(bytes(16)), 1..4),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cuts in prop::collection::vec(0usize..512, 0..8),
        ) {
            let mut output = encode(&[], &rows);
            let index = at.index(output.len());
            output[index] = byte;
            let _ = parse(chunked(&output, &cuts));
        }
    }

    fn valid_row() -> Row {
        Row {
            position: 1,
            stream: b"certification/a-1".to_vec(),
            version: 3,
            event_id: 1,
            event_type: b"certification.filed".to_vec(),
            schema_version: 1,
            occurred_at: 0,
            recorded_at: 1,
            actor: b"insurer:131016".to_vec(),
            correlation_id: 2,
            causation_id: None,
            payload: br#"{"n":1}"#.to_vec(),
            hash: vec![2; 32],
        }
    }

    #[test]
    fn parsed_rows_read_as_the_stored_event() {
        let output = encode(&[], &[valid_row()]);
        let mut parser = CopyParser::default();
        let mut batch = RowBatch::default();
        parser.feed(&output);
        let row = parser.next_row(&mut batch).unwrap().unwrap();
        assert_eq!(
            parser.next_row(&mut batch).unwrap().map(|r| r.position),
            None
        );
        parser.finish().unwrap();
        assert_eq!(row.recorded_at_micros, 1 + PG_EPOCH_MICROS);
        let canonical = batch.canonical(&row).unwrap();
        assert_eq!(canonical.stream, "certification/a-1");
        assert_eq!(canonical.payload, r#"{"n":1}"#);
        assert_eq!(batch.hash(&row), Some(Hash([2; 32])));
    }

    /// A page with no row is a header and a trailer; the parser is reused
    /// for the next page after a reset.
    #[test]
    fn an_empty_page_parses_and_the_parser_is_reused() {
        let mut parser = CopyParser::default();
        let mut batch = RowBatch::default();
        parser.feed(&encode(&[], &[]));
        assert!(parser.next_row(&mut batch).unwrap().is_none());
        parser.finish().unwrap();
        parser.reset();
        parser.finish().unwrap_err();
        parser.feed(&encode(&[], &[valid_row()]));
        assert!(parser.next_row(&mut batch).unwrap().is_some());
    }

    #[test]
    fn tuples_that_break_the_schema_are_errors() {
        let good = valid_row().fields();
        let mut cases = vec![("12 fields", good[..12].to_vec())];
        for (column, what) in [
            (1, "stream"),
            (3, "event id"),
            (5, "schema version"),
            (11, "payload"),
        ] {
            let mut null = good.to_vec();
            null[column] = None;
            cases.push((what, null));
        }
        let mut short = good.to_vec();
        short[0] = Some(vec![0; 4]);
        cases.push(("a 4-byte bigint", short));
        let mut uuid = good.to_vec();
        uuid[10] = Some(vec![0; 15]);
        cases.push(("a 15-byte causation id", uuid));
        for (what, fields) in cases {
            let mut output = header(&[]);
            output.extend(tuple(&fields));
            output.extend_from_slice(&(-1i16).to_be_bytes());
            assert!(parse([&output[..]]).is_err(), "{what}");
        }
    }

    #[test]
    fn a_negative_length_or_a_critical_flag_is_an_error() {
        let mut output = header(&[]);
        output.extend_from_slice(&13i16.to_be_bytes());
        output.extend_from_slice(&(-2i32).to_be_bytes());
        assert!(parse([&output[..]]).is_err(), "a field length of -2");
        let mut output = PG_COPY_SIGNATURE.to_vec();
        output.extend_from_slice(&0i32.to_be_bytes());
        output.extend_from_slice(&i32::MIN.to_be_bytes());
        assert!(parse([&output[..]]).is_err(), "a negative extension length");
        let mut output = PG_COPY_SIGNATURE.to_vec();
        output.extend_from_slice(&(1i32 << 16).to_be_bytes());
        output.extend_from_slice(&0i32.to_be_bytes());
        output.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(parse([&output[..]]).is_err(), "the OID flag");
    }

    #[test]
    fn data_after_the_trailer_is_an_error() {
        let mut output = encode(&[], &[valid_row()]);
        output.push(0);
        assert!(parse([&output[..]]).is_err());
    }
}
