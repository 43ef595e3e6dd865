//! Splicing the script tag into an HTML body as it streams through, compressed or not.
//!
//! The tag goes before the last `</body` of the page (case-insensitive). Finding the *last*
//! one means holding back what follows the first candidate, which is normally only
//! `</body></html>`; should a page keep going (a `</body>` inside an inline script, say), at
//! most [`MAX_HOLD`] bytes are held before the tag is placed at the held candidate anyway, so
//! memory stays bounded and the page keeps streaming. A page with no `</body` gets the tag at
//! its end, where browsers still run it.
//!
//! Compressed bodies (gzip, deflate in zlib or raw form, br) are decoded, spliced and
//! re-encoded in the same coding, so `Content-Encoding` stays true and caches and clients see
//! what the app chose. Each chunk is sync-flushed so a page the app streams still renders
//! progressively.

use bytes::Bytes;
use flate2::write::{
    DeflateDecoder, DeflateEncoder, GzEncoder, MultiGzDecoder, ZlibDecoder, ZlibEncoder,
};
use flate2::Compression;
use std::io::Write;

const NEEDLE: &[u8] = b"</body";

/// Bytes held after a `</body` candidate while looking for a later one.
pub const MAX_HOLD: usize = 64 * 1024;

/// Codings the injector can see through; anything else is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Encoding {
    /// From a `Content-Encoding` value; `None` for codings we cannot (or must not) rewrite,
    /// including stacked ones such as `gzip, br`.
    pub fn from_header(value: Option<&str>) -> Option<Encoding> {
        let Some(v) = value.map(str::trim) else {
            return Some(Encoding::Identity);
        };
        match v.to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            "br" => Some(Encoding::Brotli),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("the upstream's {coding} body does not decode: {reason}")]
    Decode {
        coding: &'static str,
        reason: String,
    },
    #[error("re-encoding the body as {coding} failed: {reason}")]
    Encode {
        coding: &'static str,
        reason: String,
    },
}

/// Finds where the tag goes in the decoded stream. Pure byte logic, no codec.
#[derive(Debug)]
pub struct Splicer {
    /// `None` once the tag is out: the rest streams through untouched.
    tag: Option<Bytes>,
    held: Vec<u8>,
    /// `held` starts with a `</body` candidate.
    holding: bool,
}

fn find_ci(hay: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(NEEDLE.len())
        .position(|w| w.eq_ignore_ascii_case(NEEDLE))
        .map(|i| i + from)
}

fn rfind_ci(hay: &[u8]) -> Option<usize> {
    hay.windows(NEEDLE.len())
        .rposition(|w| w.eq_ignore_ascii_case(NEEDLE))
}

impl Splicer {
    pub fn new(tag: Bytes) -> Self {
        Splicer {
            tag: Some(tag),
            held: Vec::new(),
            holding: false,
        }
    }

    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(tag) = &self.tag else {
            out.extend_from_slice(input);
            return;
        };
        self.held.extend_from_slice(input);
        if !self.holding {
            match find_ci(&self.held, 0) {
                Some(i) => {
                    out.extend_from_slice(&self.held[..i]);
                    self.held.drain(..i);
                    self.holding = true;
                }
                None => {
                    // Keep a tail that may be the start of a needle cut by the chunk boundary.
                    let cut = self.held.len().saturating_sub(NEEDLE.len() - 1);
                    out.extend_from_slice(&self.held[..cut]);
                    self.held.drain(..cut);
                    return;
                }
            }
        }
        if self.held.len() > MAX_HOLD {
            match find_ci(&self.held, 1).and_then(|_| rfind_ci(&self.held)) {
                Some(j) if self.held.len() - j <= MAX_HOLD => {
                    out.extend_from_slice(&self.held[..j]);
                    self.held.drain(..j);
                }
                _ => {
                    out.extend_from_slice(tag);
                    out.append(&mut self.held);
                    self.tag = None;
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let Some(tag) = self.tag.take() else {
            out.append(&mut self.held);
            return;
        };
        let at = if self.holding {
            rfind_ci(&self.held).unwrap_or(0)
        } else {
            self.held.len()
        };
        out.extend_from_slice(&self.held[..at]);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&self.held[at..]);
        self.held.clear();
    }
}

enum Decoder {
    Identity,
    Gzip(MultiGzDecoder<Vec<u8>>),
    /// HTTP "deflate" is meant to be zlib-wrapped, but servers also send raw deflate: the
    /// first two bytes tell which, so they are collected first.
    DeflateSniff(Vec<u8>),
    Zlib(ZlibDecoder<Vec<u8>>),
    RawDeflate(DeflateDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

enum Encoder {
    Identity,
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
    RawDeflate(DeflateEncoder<Vec<u8>>),
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    /// Chosen once the deflate flavour is known.
    Pending,
}

/// Brotli quality for re-encoding: quick (pages are small and this is per response), still
/// well below the size of the gzip alternative.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_LGWIN: u32 = 22;

fn is_zlib_header(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] & 0x0f == 8 && (u16::from(b[0]) << 8 | u16::from(b[1])) % 31 == 0
}

/// Decodes, splices and re-encodes one response body, chunk by chunk.
pub struct Injector {
    encoding: Encoding,
    decoder: Decoder,
    splicer: Splicer,
    encoder: Encoder,
    finished: bool,
}

impl Injector {
    pub fn new(encoding: Encoding, tag: Bytes) -> Self {
        let (decoder, encoder) = match encoding {
            Encoding::Identity => (Decoder::Identity, Encoder::Identity),
            Encoding::Gzip => (
                Decoder::Gzip(MultiGzDecoder::new(Vec::new())),
                Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::fast())),
            ),
            Encoding::Deflate => (Decoder::DeflateSniff(Vec::new()), Encoder::Pending),
            Encoding::Brotli => (
                Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
                Encoder::Brotli(Some(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    BROTLI_QUALITY,
                    BROTLI_LGWIN,
                )))),
            ),
        };
        Injector {
            encoding,
            decoder,
            splicer: Splicer::new(tag),
            encoder,
            finished: false,
        }
    }

    /// Feeds one chunk of the upstream body (`end` on the last, which may be empty) and
    /// returns what to send downstream now (possibly nothing yet).
    pub fn feed(&mut self, input: &[u8], end: bool) -> Result<Bytes, InjectError> {
        if self.finished {
            return Ok(Bytes::new());
        }
        let mut plain = self.decode(input, end)?;
        let mut spliced = Vec::with_capacity(plain.len() + if end { 1024 } else { 0 });
        self.splicer.push(&plain, &mut spliced);
        if end {
            self.splicer.finish(&mut spliced);
            self.finished = true;
        }
        plain.clear();
        self.encode(&spliced, end).map(Bytes::from)
    }

    fn decode_err(&self, e: impl std::fmt::Display) -> InjectError {
        InjectError::Decode {
            coding: self.encoding.name(),
            reason: e.to_string(),
        }
    }

    fn decode(&mut self, input: &[u8], end: bool) -> Result<Vec<u8>, InjectError> {
        if let Decoder::DeflateSniff(buf) = &mut self.decoder {
            buf.extend_from_slice(input);
            if buf.len() < 2 && !end {
                return Ok(Vec::new());
            }
            let first = std::mem::take(buf);
            if is_zlib_header(&first) {
                self.decoder = Decoder::Zlib(ZlibDecoder::new(Vec::new()));
                self.encoder = Encoder::Zlib(ZlibEncoder::new(Vec::new(), Compression::fast()));
            } else {
                self.decoder = Decoder::RawDeflate(DeflateDecoder::new(Vec::new()));
                self.encoder =
                    Encoder::RawDeflate(DeflateEncoder::new(Vec::new(), Compression::fast()));
            }
            return self.decode(&first, end);
        }
        let r = match &mut self.decoder {
            Decoder::Identity => return Ok(input.to_vec()),
            Decoder::DeflateSniff(_) => unreachable!("resolved above"),
            Decoder::Gzip(d) => write_through(d, input, end, |d| d.try_finish()),
            Decoder::Zlib(d) => write_through(d, input, end, |d| d.try_finish()),
            Decoder::RawDeflate(d) => write_through(d, input, end, |d| d.try_finish()),
            Decoder::Brotli(d) => write_through(d.as_mut(), input, end, |d| {
                d.close().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "truncated brotli stream",
                    )
                })
            }),
        };
        r.map_err(|e| self.decode_err(e))
    }

    fn encode(&mut self, plain: &[u8], end: bool) -> Result<Vec<u8>, InjectError> {
        let coding = self.encoding.name();
        let err = |e: std::io::Error| InjectError::Encode {
            coding,
            reason: e.to_string(),
        };
        match &mut self.encoder {
            Encoder::Identity => Ok(plain.to_vec()),
            // Nothing decoded yet (the deflate flavour is still unknown).
            Encoder::Pending => Ok(Vec::new()),
            Encoder::Gzip(e) => write_flushed(e, plain, end, |e| e.try_finish()).map_err(err),
            Encoder::Zlib(e) => write_flushed(e, plain, end, |e| e.try_finish()).map_err(err),
            Encoder::RawDeflate(e) => write_flushed(e, plain, end, |e| e.try_finish()).map_err(err),
            Encoder::Brotli(slot) => {
                let Some(e) = slot.as_mut() else {
                    return Ok(Vec::new());
                };
                if !end {
                    return write_flushed(e.as_mut(), plain, false, |_| Ok(())).map_err(err);
                }
                e.write_all(plain).map_err(err)?;
                let mut out = std::mem::take(e.get_mut());
                // Finishing the brotli stream takes ownership of the writer.
                if let Some(e) = slot.take() {
                    out.extend(e.into_inner());
                }
                Ok(out)
            }
        }
    }
}

/// The writers in flate2 and brotli hold their output in the `Vec` they wrap.
trait OutVec {
    fn out(&mut self) -> &mut Vec<u8>;
}

macro_rules! out_vec {
    ($($t:ty),*) => {$(impl OutVec for $t { fn out(&mut self) -> &mut Vec<u8> { self.get_mut() } })*};
}
out_vec!(
    MultiGzDecoder<Vec<u8>>,
    ZlibDecoder<Vec<u8>>,
    DeflateDecoder<Vec<u8>>,
    brotli::DecompressorWriter<Vec<u8>>,
    GzEncoder<Vec<u8>>,
    ZlibEncoder<Vec<u8>>,
    DeflateEncoder<Vec<u8>>,
    brotli::CompressorWriter<Vec<u8>>
);

fn write_through<W: Write + OutVec>(
    w: &mut W,
    input: &[u8],
    end: bool,
    finish: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    w.write_all(input)?;
    w.flush()?;
    if end {
        finish(w)?;
    }
    Ok(std::mem::take(w.out()))
}

fn write_flushed<W: Write + OutVec>(
    w: &mut W,
    plain: &[u8],
    end: bool,
    finish: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    if !plain.is_empty() {
        w.write_all(plain)?;
        if !end {
            // A sync flush per chunk keeps a streamed page rendering as it arrives.
            w.flush()?;
        }
    }
    if end {
        finish(w)?;
    }
    Ok(std::mem::take(w.out()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const TAG: &[u8] = b"<script>X</script>";

    fn splice_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Splicer::new(Bytes::from_static(TAG));
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    /// Every way of cutting `page` into two or three chunks gives the same result.
    fn splice_all_cuts(page: &[u8]) -> Vec<u8> {
        let whole = splice_chunks(&[page]);
        for i in 0..=page.len() {
            assert_eq!(
                splice_chunks(&[&page[..i], &page[i..]]),
                whole,
                "cut at {i}"
            );
            for j in i..=page.len() {
                assert_eq!(
                    splice_chunks(&[&page[..i], &page[i..j], &page[j..]]),
                    whole,
                    "cuts at {i},{j}"
                );
            }
        }
        whole
    }

    #[test]
    fn goes_before_the_last_body_close_whatever_the_chunking() {
        let out = splice_all_cuts(b"<html><body><p>hi</p></BODY></html>");
        assert_eq!(
            out,
            b"<html><body><p>hi</p><script>X</script></BODY></html>".to_vec()
        );
        let out = splice_all_cuts(b"<body><script>var s='</body>'</script></body>\n");
        assert_eq!(
            out,
            b"<body><script>var s='</body>'</script><script>X</script></body>\n".to_vec()
        );
    }

    #[test]
    fn page_without_body_close_gets_the_tag_at_its_end() {
        assert_eq!(
            splice_all_cuts(b"<p>no end tag</bod"),
            b"<p>no end tag</bod<script>X</script>".to_vec()
        );
        assert_eq!(splice_all_cuts(b""), TAG.to_vec());
    }

    #[test]
    fn holding_is_bounded() {
        let mut page = b"<body><script>'</body>'".to_vec();
        page.extend(std::iter::repeat_n(b'x', 2 * MAX_HOLD));
        page.extend(b"</script></body>");
        let mut s = Splicer::new(Bytes::from_static(TAG));
        let mut out = Vec::new();
        for c in page.chunks(1000) {
            s.push(c, &mut out);
        }
        // Past the bound the tag went out at the held candidate and everything streamed on.
        assert!(out.len() > MAX_HOLD);
        s.finish(&mut out);
        let mut want = b"<body><script>'<script>X</script></body>'".to_vec();
        want.extend(std::iter::repeat_n(b'x', 2 * MAX_HOLD));
        want.extend(b"</script></body>");
        let tag_at = |b: &[u8]| b.windows(TAG.len()).position(|w| w == TAG);
        assert_eq!(tag_at(&out), Some(15));
        assert!(out == want, "{} vs {} bytes", out.len(), want.len());
    }

    const PAGE: &[u8] = b"<!doctype html><html><head><title>t</title></head><body>\
        <h1>Accounts</h1><p>lorem ipsum dolor sit amet</p></body></html>\n";
    const WANT: &[u8] = b"<!doctype html><html><head><title>t</title></head><body>\
        <h1>Accounts</h1><p>lorem ipsum dolor sit amet</p><script>X</script></body></html>\n";

    fn run(enc: Encoding, body: &[u8], chunk: usize) -> Vec<u8> {
        let mut inj = Injector::new(enc, Bytes::from_static(TAG));
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            out.extend(inj.feed(c, false).unwrap());
        }
        out.extend(inj.feed(&[], true).unwrap());
        out
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(b)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn identity_body_in_chunks() {
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(run(Encoding::Identity, PAGE, chunk), WANT, "chunk {chunk}");
        }
    }

    #[test]
    fn gzip_body_is_decoded_spliced_and_re_encoded() {
        let z = gzip(PAGE);
        for chunk in [1, 5, 64, 4096] {
            let out = run(Encoding::Gzip, &z, chunk);
            assert_eq!(out[..2], [0x1f, 0x8b], "still gzip");
            assert_eq!(gunzip(&out), WANT, "chunk {chunk}");
        }
        // Several gzip members (concatenated streams) are one body.
        let mut two = gzip(&PAGE[..40]);
        two.extend(gzip(&PAGE[40..]));
        assert_eq!(gunzip(&run(Encoding::Gzip, &two, 16)), WANT);
    }

    #[test]
    fn chunks_flow_out_before_the_end() {
        // A streamed page renders while it streams: output comes with each chunk.
        let z = gzip(&PAGE.repeat(50));
        let mut inj = Injector::new(Encoding::Gzip, Bytes::from_static(TAG));
        let early: usize = z
            .chunks(z.len() / 2 + 1)
            .take(1)
            .map(|c| inj.feed(c, false).unwrap().len())
            .sum();
        assert!(early > 0);
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(PAGE).unwrap();
        let z = z.finish().unwrap();
        let out = run(Encoding::Deflate, &z, 1);
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&out[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, WANT);

        let mut r = DeflateEncoder::new(Vec::new(), Compression::default());
        r.write_all(PAGE).unwrap();
        let r = r.finish().unwrap();
        let out = run(Encoding::Deflate, &r, 10);
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(&out[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, WANT);
    }

    #[test]
    fn brotli_body() {
        let mut b = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut b, 4096, 9, 22);
            w.write_all(PAGE).unwrap();
        }
        for chunk in [1, 33, 4096] {
            let out = run(Encoding::Brotli, &b, chunk);
            let mut plain = Vec::new();
            brotli::Decompressor::new(&out[..], 4096)
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, WANT, "chunk {chunk}");
        }
    }

    #[test]
    fn corrupt_or_truncated_bodies_are_errors_not_panics() {
        let mut inj = Injector::new(Encoding::Gzip, Bytes::from_static(TAG));
        let e = inj.feed(b"definitely not gzip", true).unwrap_err();
        assert!(
            matches!(e, InjectError::Decode { coding: "gzip", .. }),
            "{e}"
        );

        let z = gzip(PAGE);
        let mut inj = Injector::new(Encoding::Gzip, Bytes::from_static(TAG));
        inj.feed(&z[..z.len() / 2], false).unwrap();
        assert!(inj.feed(&[], true).is_err());

        let mut inj = Injector::new(Encoding::Brotli, Bytes::from_static(TAG));
        assert!(inj.feed(&[0xff; 64], true).is_err());
    }

    #[test]
    fn content_encoding_values() {
        assert_eq!(Encoding::from_header(None), Some(Encoding::Identity));
        assert_eq!(Encoding::from_header(Some(" GZIP ")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("x-gzip")), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_header(Some("br")), Some(Encoding::Brotli));
        assert_eq!(
            Encoding::from_header(Some("deflate")),
            Some(Encoding::Deflate)
        );
        assert_eq!(Encoding::from_header(Some("zstd")), None);
        assert_eq!(Encoding::from_header(Some("gzip, br")), None);
    }
}
