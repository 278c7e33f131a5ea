// SPDX-License-Identifier: MPL-2.0
//! Just enough STUN (RFC 8489) to route a datagram from an address the server has not heard
//! from yet: the `USERNAME` of a binding request names the session it is for
//! (`<server ufrag>:<peer ufrag>`, RFC 8445 §7.2.2). Every length is checked against the
//! datagram; the walk over the attributes ends with the datagram.

const HEADER: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const USERNAME: u16 = 0x0006;

/// The server's ufrag (the part of `USERNAME` before the colon) of a STUN binding request,
/// or `None` for anything else.
pub fn request_ufrag(datagram: &[u8]) -> Option<&[u8]> {
    let header = datagram.get(..HEADER)?;
    if header[..2] != BINDING_REQUEST || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attributes = datagram.get(HEADER..HEADER.checked_add(length)?)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4usize.checked_add(len)?)?;
        if kind == USERNAME {
            let end = value.iter().position(|&b| b == b':')?;
            return Some(&value[..end]);
        }
        // Values are padded to four bytes.
        let padded = len.checked_add(3)? & !3;
        attributes = attributes.get(4usize.checked_add(padded)?..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![];
        for (kind, value) in attributes {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn finds_the_server_ufrag() {
        let d = request(&[(0x0024, &[0, 0, 0, 1]), (USERNAME, b"srv1:peer")]);
        assert_eq!(request_ufrag(&d), Some(&b"srv1"[..]));
        let d = request(&[(0x8022, b"odd"), (USERNAME, b"ab:c")]);
        assert_eq!(request_ufrag(&d), Some(&b"ab"[..]));
    }

    #[test]
    fn refuses_what_is_not_a_well_formed_request() {
        assert_eq!(request_ufrag(&[]), None);
        assert_eq!(request_ufrag(&[0; 19]), None);
        let ok = request(&[(USERNAME, b"a:b")]);
        // A success response, not a request.
        let mut response = ok.clone();
        response[..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(request_ufrag(&response), None);
        // No colon; a length past the end; an attribute past the message.
        assert_eq!(request_ufrag(&request(&[(USERNAME, b"ab")])), None);
        let mut long = ok.clone();
        long[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(request_ufrag(&long), None);
        let mut cut = ok.clone();
        cut[22..24].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert_eq!(request_ufrag(&cut), None);
        // Every truncation and every single-byte change is answered without a panic.
        for n in 0..ok.len() {
            let _ = request_ufrag(&ok[..n]);
            for b in [0u8, 0x3f, 0xff] {
                let mut d = ok.clone();
                d[n] = b;
                let _ = request_ufrag(&d);
            }
        }
    }
}
