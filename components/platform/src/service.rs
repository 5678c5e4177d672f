//! The thin Spin glue every service shares: the per-request context (request id, verified
//! identity, client address, query parameters, a logger that stamps the request id) and
//! JSON / problem+json responses that always carry `x-request-id`.

use serde::Serialize;
use spin_sdk::http::{Request, Response};

use crate::auth::{CLIENT_ADDR_HEADER, Identity};
use crate::log::Logger;
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::request_id::{REQUEST_ID_HEADER, RequestId};

/// What a handler knows about the request besides its body.
pub struct Ctx {
    pub request_id: String,
    pub identity: Option<Identity>,
    pub client_addr: Option<String>,
    pub log: Logger,
    query: Vec<(String, String)>,
}

impl Ctx {
    pub fn new(component: &str, request: &Request) -> Ctx {
        let header = |name: &str| request.header(name).and_then(|v| v.as_str());
        let request_id = RequestId::from_header(header(REQUEST_ID_HEADER)).into_string();
        Ctx {
            identity: Identity::from_headers(|name| request.header(name).and_then(|v| v.as_str())),
            client_addr: header(CLIENT_ADDR_HEADER).map(str::to_owned),
            log: Logger::new(component).with_request_id(request_id.clone()),
            query: form_urlencoded::parse(request.query().as_bytes())
                .into_owned()
                .collect(),
            request_id,
        }
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// 401 for an anonymous caller.
    pub fn identity(&self) -> Result<&Identity, Problem> {
        self.identity.as_ref().ok_or_else(|| {
            Problem::unauthorized("This route needs a valid access token (Authorization: Bearer …)")
        })
    }

    /// A JSON response with `status`.
    pub fn json<T: Serialize>(&self, status: u16, body: &T) -> Response {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header(REQUEST_ID_HEADER, self.request_id.as_str())
            .body(serde_json::to_vec(body).unwrap_or_default())
            .build()
    }

    /// An empty response (204 and the like).
    pub fn empty(&self, status: u16) -> Response {
        Response::builder()
            .status(status)
            .header(REQUEST_ID_HEADER, self.request_id.as_str())
            .body(Vec::new())
            .build()
    }

    /// A problem+json response; server errors are logged with their detail.
    pub fn problem(&self, problem: Problem) -> Response {
        let status = problem.status_code().as_u16();
        if status >= 500 {
            self.log.error(
                "request failed",
                &[
                    ("status", status.into()),
                    ("detail", problem.detail.clone().into()),
                ],
            );
        }
        Response::builder()
            .status(status)
            .header("content-type", PROBLEM_CONTENT_TYPE)
            .header(REQUEST_ID_HEADER, self.request_id.as_str())
            .body(problem.to_json_vec())
            .build()
    }

    /// `result`'s response either way.
    pub fn respond(&self, result: Result<Response, Problem>) -> Response {
        result.unwrap_or_else(|p| self.problem(p))
    }
}

/// Maps a storage failure to a problem: unique violations are the caller's 409, a lost race a
/// 503 to retry, anything else a 500. The engine's message goes to the log, never to the client.
impl From<crate::db::DbError> for Problem {
    fn from(e: crate::db::DbError) -> Problem {
        use crate::db::DbError;
        match e {
            DbError::UniqueViolation(_) => {
                Problem::conflict("A resource with these unique values already exists")
            }
            DbError::Conflict(_) => {
                Problem::service_unavailable("A concurrent update won; retry the request")
            }
            other => {
                crate::log::log_json(
                    crate::log::Level::Error,
                    "storage",
                    None,
                    "storage operation failed",
                    &[("error", other.to_string().into())],
                );
                Problem::internal("A storage operation failed")
            }
        }
    }
}
