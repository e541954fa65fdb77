//! The query parameters each API route takes. Anything else is refused with `400` naming the
//! parameter, instead of being ignored (a misspelt or unsupported `$filter` must not return
//! every object as if it had been applied).

use crate::error::ApiError;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The paging parameters of every list (`$top`, `$skiptoken` from `@odata.nextLink`).
const PAGED: &[&str] = &["$top", "$skiptoken"];

/// The query parameters of a route (method and matched path); none for any route not listed.
pub(crate) fn allowed(method: &Method, route: &str) -> &'static [&'static str] {
    if method != Method::GET {
        return &[];
    }
    match route {
        "/api/v1/devices" => &[
            "$top",
            "$skiptoken",
            "hierarchy",
            "name",
            "comanagement",
            "eligibility",
            "defender",
            "$orderby",
        ],
        "/api/v1/reports/endpoint-analytics" => &["hierarchy"],
        "/api/v1/reports/endpoint-analytics/apps" | "/api/v1/comanagement/devices" => {
            &["$top", "$skiptoken", "hierarchy"]
        }
        "/api/v1/reports/endpoint-analytics/devices" | "/api/v1/reports/defender/{report}" => {
            &["$top", "$skiptoken", "hierarchy", "name"]
        }
        "/api/v1/hierarchies"
        | "/api/v1/hierarchies/{hid}/ext/{fid}/records"
        | "/api/v1/roleAssignments" => PAGED,
        "/api/v1/actions" => &["$top", "$skiptoken", "hierarchy", "resource_id", "status"],
        "/api/v1/hierarchies/{hid}/connector/actions" => &["connector_id", "wait"],
        "/v1.0/applications" | "/v1.0/servicePrincipals" => &["$filter", "$top", "$skiptoken"],
        "/api/v1/hierarchies/{hid}/upload/{channel}/keys"
        | "/api/v1/hierarchies/{hid}/upload/ext/{fid}/keys" => &["after"],
        _ => &[],
    }
}

/// Refuses a request with a query parameter its route does not take, or one given twice.
pub(crate) async fn middleware(req: Request, next: Next) -> Response {
    if let Some(q) = req.uri().query().filter(|q| !q.is_empty()) {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        if let Err(e) = check(req.method(), &route, q) {
            return e.into_response();
        }
    }
    next.run(req).await
}

fn check(method: &Method, route: &str, query: &str) -> Result<(), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::bad_request("the query string is not valid"))?;
    let allowed = allowed(method, route);
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        let refuse = |message: String| {
            Err(ApiError::bad_request(message)
                .with_details(serde_json::json!({ "parameter": name })))
        };
        if !allowed.contains(&name.as_str()) {
            let takes = if allowed.is_empty() {
                "takes no query parameters".to_string()
            } else {
                format!("takes only {}", allowed.join(", "))
            };
            return refuse(format!(
                "unknown query parameter {name:?}: {method} {route} {takes}"
            ));
        }
        if seen.contains(&name.as_str()) {
            return refuse(format!("the query parameter {name:?} is given twice"));
        }
        seen.push(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(check(&Method::GET, "/api/v1/devices", "$top=5&name=PC").is_ok());
        let e = check(&Method::GET, "/api/v1/devices", "$filter=x").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("\"$filter\""), "{}", e.message);
        assert!(check(&Method::GET, "/api/v1/devices", "$top=1&$top=2").is_err());
        assert!(check(&Method::PUT, "/api/v1/hierarchies/{hid}", "x=1").is_err());
        assert!(check(&Method::GET, "/api/v1/overview", "hierarchy=x").is_err());
    }
}
