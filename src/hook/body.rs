//! Reading a delivery body: plain or `Content-Encoding: gzip`, bounded by the size limit after
//! decompression. Decompression streams through a reader that stops one byte past the limit,
//! so a small gzip bomb costs no more than the limit.

use std::io::Read as _;

use axum::body::{Body, Bytes};
use http::{HeaderMap, header};

use crate::error::{ApiError, Code};

/// Whether the body is gzip-encoded (`Content-Encoding: gzip`); absent or `identity`: plain.
/// Any other encoding is refused with 415 naming it.
pub(super) fn content_encoding(headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut gzipped = false;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("identity") {
                continue;
            }
            if (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
                && !gzipped
            {
                gzipped = true;
                continue;
            }
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                format!("Content-Encoding `{coding}` is not supported (only gzip, once)"),
            ));
        }
    }
    Ok(gzipped)
}

/// The whole body, decompressed when `gzipped`; 413 when it (decompressed) exceeds `max`,
/// 400 when it is not valid gzip.
pub(super) async fn read(body: Body, gzipped: bool, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("request body is larger than {max} bytes"),
        )
    };
    // A gzip body larger than the limit cannot decompress to less.
    let raw = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large())?;
    if !gzipped {
        return Ok(raw);
    }
    let decoded = tokio::task::spawn_blocking(move || {
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .take(limit)
            .read_to_end(&mut out)
            .map(|_| out)
    })
    .await
    .map_err(|_| ApiError::new(Code::Internal, "internal error"))?
    .map_err(|e| ApiError::invalid("body", format!("is not valid gzip: {e}")))?;
    if decoded.len() > max {
        return Err(too_large());
    }
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_is_decompressed_within_the_limit() {
        let body = read(Body::from(gzip(b"{\"a\":1}")), true, 100)
            .await
            .unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
        // 10 MB of zeros compress to ~10 kB: refused at the limit, not inflated whole.
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        let err = read(Body::from(bomb), true, 1024 * 1024).await.unwrap_err();
        assert_eq!(err.code, Code::PayloadTooLarge);
        let err = read(Body::from("not gzip"), true, 100).await.unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }

    #[test]
    fn other_encodings_are_refused_by_name() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_encoding(&headers), Ok(false));
        headers.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(content_encoding(&headers), Ok(true));
        headers.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        let err = content_encoding(&headers).unwrap_err();
        assert_eq!(err.code, Code::UnsupportedMediaType);
        assert!(err.message.contains("`br`"), "{}", err.message);
    }
}
