use super::*;

/// Every prefix shorter than the whole message is incomplete.
fn incomplete_until<T: std::fmt::Debug>(
    msg: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, OpeningError>,
) {
    for n in 0..msg.len() {
        assert!(
            matches!(parse(&msg[..n]), Ok(None)),
            "prefix of {n} bytes: {:?}",
            parse(&msg[..n])
        );
    }
}

#[test]
fn greeting_incomplete_valid_and_malformed() {
    let greeting = [5, 2, 2, 0];
    incomplete_until(&greeting, parse_greeting);
    assert_eq!(
        parse_greeting(&[5, 2, 2, 0, 5, 1]),
        Ok(Some(Greeting {
            len: 4,
            no_auth: true
        }))
    );
    assert!(!parse_greeting(&[5, 1, 2]).unwrap().unwrap().no_auth);
    assert_eq!(parse_greeting(&[4, 1, 0]), Err(OpeningError::Version(4)));
    assert_eq!(parse_greeting(&[5, 0]), Err(OpeningError::NoMethods));
}

#[test]
fn requests_of_every_address_type() {
    let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
    let mut domain = vec![5, 1, 0, 3, 11];
    domain.extend_from_slice(b"example.com");
    domain.extend_from_slice(&[1, 187]);
    let mut v6 = vec![5, 1, 0, 4];
    v6.extend_from_slice(&[0; 15]);
    v6.extend_from_slice(&[1, 0, 80]);
    for msg in [&v4[..], &domain, &v6] {
        incomplete_until(msg, parse_socks_message);
        let mut more = msg.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse_socks_message(&more),
            Ok(Some(SocksMessage {
                len: msg.len(),
                code: 1, // CONNECT
            }))
        );
    }
    assert_eq!(v6.len(), 22);
}

#[test]
fn malformed_requests() {
    assert_eq!(
        parse_socks_message(&[4, 1, 0, 1]),
        Err(OpeningError::Version(4))
    );
    assert_eq!(
        parse_socks_message(&[5, 1, 7, 1]),
        Err(OpeningError::Reserved(7))
    );
    assert_eq!(
        parse_socks_message(&[5, 1, 0, 2, 0, 0]),
        Err(OpeningError::AddressType(2))
    );
    assert_eq!(
        parse_socks_message(&[5, 1, 0, 3, 0, 0, 80]),
        Err(OpeningError::EmptyDomain)
    );
}

#[test]
fn core_replies() {
    incomplete_until(&[5, 0], parse_method_reply);
    assert_eq!(parse_method_reply(&[5, 0, 5]), Ok(Some(0)));
    assert_eq!(parse_method_reply(&[5, 0xFF]), Ok(Some(0xFF)));
    assert_eq!(parse_method_reply(&[1, 0]), Err(OpeningError::Version(1)));
    let failure = socks_reply(5);
    incomplete_until(&failure, parse_socks_message);
    assert_eq!(
        parse_socks_message(&failure),
        Ok(Some(SocksMessage { len: 10, code: 5 }))
    );
}

#[test]
fn http_connect_and_absolute_uri() {
    let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    incomplete_until(connect, parse_http_request);
    assert_eq!(
        parse_http_request(connect),
        Ok(Some(HttpRequestHead {
            len: connect.len(),
            connect: true
        }))
    );
    let plain = b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\nbody";
    assert_eq!(
        parse_http_request(plain),
        Ok(Some(HttpRequestHead {
            len: plain.len() - 4,
            connect: false
        }))
    );
    assert!(matches!(
        parse_http_request(b"GET /x HTTP/1.1\r\n\r\n"),
        Err(OpeningError::NotProxyRequest(path)) if path == "/x"
    ));
    assert!(matches!(
        parse_http_request(b"\x05\x01\x00"),
        Err(OpeningError::Http(_))
    ));
}

#[test]
fn http_status_of_the_core() {
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    incomplete_until(ok, parse_http_response);
    assert_eq!(
        parse_http_response(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03"),
        Ok(Some(HttpResponseHead {
            len: ok.len(),
            status: 200
        }))
    );
    let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(parse_http_response(refused).unwrap().unwrap().status, 503);
    assert!(parse_http_response(b"SSH-2.0-x\r\n").is_err());
}

#[test]
fn answers_are_well_formed() {
    assert_eq!(
        parse_socks_message(&socks_reply(1)),
        Ok(Some(SocksMessage { len: 10, code: 1 }))
    );
    let response = http_response(503, "Service Unavailable", "no session");
    let head = parse_http_response(&response).unwrap().unwrap();
    assert_eq!(head.status, 503);
    assert_eq!(&response[head.len..], b"no session\n");
    assert!(String::from_utf8(response)
        .unwrap()
        .contains("Content-Length: 11\r\n"));
}
