//! Minimal DER handling to put a multi-valued subject into a certificate.
//!
//! rcgen 0.14 keeps one value per attribute type in a subject (rustls/rcgen#81), so it
//! cannot write `O=reader, O=writer`. We let rcgen build the whole certificate (extensions,
//! keys, validity), then swap its subject for one we encode and sign the new
//! `TBSCertificate` with the issuer's key. Only definite-length DER with single-byte tags
//! is handled, which is all rcgen produces.

/// Why a certificate could not be rewritten (only on a bug: the input comes from rcgen).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(&'static str);

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
const VERSION: u8 = 0xa0; // [0] EXPLICIT, first in TBSCertificate

/// DER contents of the OIDs 2.5.4.3 (commonName) and 2.5.4.10 (organizationName).
pub(crate) const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
pub(crate) const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// One element: its tag, its contents, and all its bytes (header included).
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Splits the first element off `input`.
fn next_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("missing tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(DerError("multi-byte tag"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(DerError("missing length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(DerError("bad length"));
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return Err(DerError("truncated element"));
    }
    let header = input.len() - rest.len();
    let (whole, after) = input.split_at(header + len);
    let content = whole.get(header..).ok_or(DerError("bad length"))?;
    Ok((
        Tlv {
            tag,
            content,
            whole,
        },
        after,
    ))
}

/// All elements of a constructed element's contents.
fn elements(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = next_tlv(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// Encodes one element.
fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A `Name` with one single-valued RDN per `(oid, value)`, values as UTF8String.
pub(crate) fn name(attributes: &[(&[u8], &str)]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for (oid, value) in attributes {
        let mut atv = encode(OID, oid);
        atv.extend(encode(UTF8_STRING, value.as_bytes()));
        rdns.extend(encode(SET, &encode(SEQUENCE, &atv)));
    }
    encode(SEQUENCE, &rdns)
}

/// Replaces the subject of `cert_der` by `subject` (a DER `Name`) and signs the result with
/// `issuer_key`, which must be the key that signed `cert_der` (the signature algorithm is
/// kept).
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject: &[u8],
    issuer_key: &impl rcgen::SigningKey,
) -> Result<Vec<u8>, super::CertGenError> {
    let (cert, rest) = next_tlv(cert_der)?;
    if cert.tag != SEQUENCE || !rest.is_empty() {
        return Err(DerError("not a certificate").into());
    }
    let [tbs, algorithm, _signature] = elements(cert.content)?[..] else {
        return Err(DerError("certificate is not tbs, algorithm, signature").into());
    };
    // version, serial, signature, issuer, validity, subject, ...
    let fields = elements(tbs.content)?;
    let subject_at = if fields.first().map(|f| f.tag) == Some(VERSION) {
        5
    } else {
        4
    };
    if fields.get(subject_at).map(|f| f.tag) != Some(SEQUENCE) {
        return Err(DerError("no subject in TBSCertificate").into());
    }
    let mut tbs_content = Vec::with_capacity(tbs.content.len() + subject.len());
    for (i, field) in fields.iter().enumerate() {
        tbs_content.extend_from_slice(if i == subject_at {
            subject
        } else {
            field.whole
        });
    }
    let tbs = encode(SEQUENCE, &tbs_content);

    let mut signature = vec![0]; // no unused bits
    signature.extend(issuer_key.sign(&tbs)?);
    let mut body = tbs;
    body.extend_from_slice(algorithm.whole);
    body.extend(encode(BIT_STRING, &signature));
    Ok(encode(SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_forms_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let der = encode(SEQUENCE, &content);
            let (tlv, rest) = next_tlv(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(tlv.tag, SEQUENCE);
            assert_eq!(tlv.content, &content[..]);
            assert_eq!(tlv.whole, &der[..]);
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x00],
        ] {
            assert!(next_tlv(bad).is_err(), "{bad:?}");
        }
    }
}
