//! A small blocking HTTP client over `wasi:http/outgoing-handler`. The host decides which hosts
//! a plugin may reach; a denied request comes back as an `Err`, never a trap.

/// A response with its body read completely (bounded by `MAX_BODY`).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Provider answers are small JSON documents; anything larger is refused rather than buffered.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug)]
pub struct HttpError(pub String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sends `method url` with `headers` and `body`.
#[cfg(target_arch = "wasm32")]
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError(format!("not an absolute URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(HttpError(format!("unsupported scheme {other}"))),
    };
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let fields =
        Fields::from_list(&entries).map_err(|e| HttpError(format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| HttpError(format!("invalid request {what}"));
    request.set_method(&method).map_err(|_| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| invalid("path"))?;
    let outgoing = request.body().map_err(|_| invalid("body"))?;
    let future = outgoing_handler::handle(request, None)
        .map_err(|e| HttpError(format!("request refused: {e:?}")))?;
    {
        let stream = outgoing.write().map_err(|_| invalid("body stream"))?;
        // blocking_write_and_flush takes at most 4096 bytes per call.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError(format!("writing request body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| HttpError(format!("finishing request body: {e:?}")))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or_else(|| HttpError("response not ready".into()))?
        .map_err(|_| HttpError("response already taken".into()))?
        .map_err(|e| HttpError(format!("request failed: {e:?}")))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| HttpError("response body taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|_| HttpError("response stream taken".into()))?;
    let mut buffer = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                buffer.extend_from_slice(&chunk);
                if buffer.len() > MAX_BODY {
                    return Err(HttpError("response body too large".into()));
                }
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(HttpError(format!("reading response: {e:?}"))),
        }
    }
    Ok(Response {
        status,
        body: buffer,
    })
}

/// Native builds (unit tests, `cargo build --workspace`) have no `wasi:http`.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(
    _method: &str,
    _url: &str,
    _headers: &[(&str, &str)],
    _body: &[u8],
) -> Result<Response, HttpError> {
    Err(HttpError(
        "outbound HTTP is only available inside the payment host".into(),
    ))
}
