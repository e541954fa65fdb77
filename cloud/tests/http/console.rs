//! The admin center and the authorization endpoint it signs in with, over HTTP: the OAuth 2.0
//! authorization code flow with PKCE, and the console's sessions, CSRF checks, tenant scoping
//! and security headers. Cookies are handled by hand (no redirects followed, no cookie jar).

use crate::common::*;
use base64::Engine;
use cloudattach_cloud::ServeOptions;
use cloudattach_cloud::auth::PUBLIC_CLIENT_ID;
use cloudattach_cloud::seed::{CONTOSO_TENANT_ID, DEV_PASSWORD};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Response, Url};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ADMIN_CENTER: &str = "00000000-0000-4000-8000-0000000ad4c1";
const LOOPBACK: &str = "http://127.0.0.1:8400/cb";
const FAB_HID: &str = "5a1e0000-0000-4000-8000-00000000fab1";

/// A client that follows no redirect and keeps no cookie.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in console session: the `ca_session` cookie's value and the page's CSRF token.
#[derive(Debug, Clone)]
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn header(&self) -> String {
        format!("ca_session={}", self.cookie)
    }
}

fn location(r: &Response) -> Option<String> {
    r.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The value `name` is set to by a response's Set-Cookie headers (the whole header too).
fn cookie_set(h: &HeaderMap, name: &str) -> Option<(String, String)> {
    set_cookies(h).into_iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((&c, ""));
        let (n, v) = pair.split_once('=')?;
        (n.trim() == name).then(|| (v.trim().to_string(), c.clone()))
    })
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The hidden inputs of a page (maud writes `<input type="hidden" name=".." value="..">`).
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input").skip(1) {
        let tag = &part[..part.find('>').unwrap_or(part.len())];
        if !tag.contains(r#"type="hidden""#) {
            continue;
        }
        let attr = |a: &str| {
            let key = format!(r#"{a}=""#);
            tag.find(&key).map(|i| {
                let rest = &tag[i + key.len()..];
                unescape(&rest[..rest.find('"').unwrap_or(rest.len())])
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn hidden(html: &str, name: &str) -> Option<String> {
    hidden_inputs(html)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn query_of(url: &str) -> HashMap<String, String> {
    let u = Url::parse(url).unwrap_or_else(|_| Url::parse(&format!("http://x{url}")).unwrap());
    u.query_pairs().into_owned().collect()
}

/// A PKCE verifier and its S256 challenge.
fn pkce() -> (String, String) {
    use sha2::Digest;
    let verifier = format!("v-{}", uuid::Uuid::new_v4().simple()) + "-0123456789abcdefghij";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn body(r: Response) -> String {
    r.text().await.unwrap()
}

/// Drives the admin center's real sign-in over HTTP: `/admin/signin` → the authorize page →
/// the credentials → the consent page (when shown) → `/admin/callback` → the session cookie.
/// Returns the session and where the callback sent the browser.
async fn sign_in_to(c: &Cloud, upn: &str, return_to: Option<&str>) -> (Session, String) {
    let b = browser();
    let start = match return_to {
        Some(t) => format!(
            "/admin/signin?{}",
            serde_urlencoded::to_string([("return_to", t)]).unwrap()
        ),
        None => "/admin/signin".to_string(),
    };
    let r = b.get(c.url(&start)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let (signin_cookie, raw) = cookie_set(r.headers(), "ca_signin").expect("ca_signin set");
    assert!(raw.contains("HttpOnly"), "{raw}");
    let authorize = location(&r).unwrap();
    assert!(
        authorize.starts_with("/organizations/oauth2/v2.0/authorize?"),
        "{authorize}"
    );
    let q = query_of(&authorize);
    assert_eq!(q["client_id"], ADMIN_CENTER);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], c.url("/admin/callback"));

    // The sign-in page.
    let r = b.get(c.url(&authorize)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = body(r).await;
    let mut form = hidden_inputs(&page);
    assert!(form.iter().any(|(n, v)| n == "step" && v == "signin"));
    form.push(("upn".into(), upn.into()));
    form.push(("password".into(), DEV_PASSWORD.into()));
    form.push(("decision".into(), "signin".into()));
    let r = b
        .post(c.url("/organizations/oauth2/v2.0/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let r = if r.status() == 200 {
        // The consent page.
        let page = body(r).await;
        assert!(page.contains("Permissions requested"), "{page}");
        let ticket = hidden(&page, "ticket").expect("ticket");
        b.post(c.url("/organizations/oauth2/v2.0/authorize"))
            .form(&[
                ("step", "consent"),
                ("ticket", ticket.as_str()),
                ("decision", "accept"),
            ])
            .send()
            .await
            .unwrap()
    } else {
        r
    };
    assert_eq!(r.status(), 303);
    let cb = location(&r).unwrap();
    assert!(cb.starts_with(&c.url("/admin/callback?")), "{cb}");
    let cq = query_of(&cb);
    assert!(cq.contains_key("code"), "{cb}");
    assert_eq!(cq["state"], q["state"]);

    // The callback: the code is redeemed on the server, the session cookie set.
    let r = b
        .get(&cb)
        .header("cookie", format!("ca_signin={signin_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let landed = location(&r).unwrap();
    let (cookie, raw) = cookie_set(r.headers(), "ca_session").expect("ca_session set");
    assert!(!cookie.is_empty(), "{raw}");
    // The sign-in cookie is cleared.
    let (v, _) = cookie_set(r.headers(), "ca_signin").expect("ca_signin cleared");
    assert_eq!(v, "");

    // The CSRF token is in every page's sign-out form.
    let r = b
        .get(c.url(&landed))
        .header("cookie", format!("ca_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 200 || r.status() == 403,
        "{landed}: {}",
        r.status()
    );
    let page = body(r).await;
    assert!(page.contains(upn), "{page}");
    let csrf = hidden(&page, "csrf").expect("csrf in the sign-out form");
    (Session { cookie, csrf }, landed)
}

async fn sign_in(c: &Cloud, upn: &str) -> Session {
    sign_in_to(c, upn, None).await.0
}

async fn page(c: &Cloud, s: Option<&Session>, path: &str) -> Response {
    let mut rb = browser().get(c.url(path));
    if let Some(s) = s {
        rb = rb.header("cookie", s.header());
    }
    rb.send().await.unwrap()
}

async fn post_form(
    c: &Cloud,
    s: Option<&Session>,
    path: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
) -> Response {
    let mut rb = browser().post(c.url(path)).form(form);
    if let Some(s) = s {
        rb = rb.header("cookie", s.header());
    }
    if let Some(o) = origin {
        rb = rb.header("origin", o);
    }
    rb.send().await.unwrap()
}

async fn use_intune_rbac(c: &Cloud, admin: &str) -> Value {
    let (s, v) = c.get(admin, "/api/v1/tenant/settings").await;
    assert_eq!(s, 200, "{v}");
    v["use_intune_rbac"].clone()
}

/// Contoso with a hierarchy and three devices; returns the admin's bearer token.
async fn populated(c: &Cloud) -> String {
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    let (s, v) = c
        .post(
            &admin,
            &format!("/api/v1/hierarchies/{HID}/upload/devices"),
            device_batch(1..4),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    admin
}

// ---------------------------------------------------------------------------------------------
// The authorization endpoint

/// The query of an authorization request.
type Request = Vec<(&'static str, String)>;

/// The query of an authorization request of the command line client.
fn cli_request(challenge: &str, state: &str) -> Request {
    vec![
        ("client_id", PUBLIC_CLIENT_ID.to_string()),
        ("response_type", "code".into()),
        ("redirect_uri", LOOPBACK.into()),
        (
            "scope",
            "openid offline_access api://cloudattach/user_impersonation".into(),
        ),
        ("state", state.into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn authorize_url(c: &Cloud, tenant: &str, q: &[(&str, String)]) -> String {
    c.url(&format!(
        "/{tenant}/oauth2/v2.0/authorize?{}",
        serde_urlencoded::to_string(q).unwrap()
    ))
}

/// Posts the sign-in form of `q` with `upn`/`password`/`decision`.
async fn submit(
    c: &Cloud,
    tenant: &str,
    q: &[(&str, String)],
    upn: &str,
    password: &str,
    decision: &str,
) -> Response {
    let mut f: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    f.extend([
        ("step", "signin"),
        ("upn", upn),
        ("password", password),
        ("decision", decision),
    ]);
    browser()
        .post(c.url(&format!("/{tenant}/oauth2/v2.0/authorize")))
        .form(&f)
        .send()
        .await
        .unwrap()
}

/// Signs `upn` in for the command line client; accepts the consent when asked. Returns the
/// code and whether the consent page was shown.
async fn cli_code(c: &Cloud, upn: &str, challenge: &str) -> (String, bool) {
    let q = cli_request(challenge, "st-1");
    let r = submit(c, "organizations", &q, upn, DEV_PASSWORD, "signin").await;
    let (r, consent) = if r.status() == 200 {
        let page = body(r).await;
        let ticket = hidden(&page, "ticket").expect("consent ticket");
        let r = browser()
            .post(c.url("/organizations/oauth2/v2.0/authorize"))
            .form(&[
                ("step", "consent"),
                ("ticket", ticket.as_str()),
                ("decision", "accept"),
            ])
            .send()
            .await
            .unwrap();
        (r, true)
    } else {
        (r, false)
    };
    assert_eq!(r.status(), 303);
    let to = location(&r).unwrap();
    assert!(to.starts_with(LOOPBACK), "{to}");
    let q = query_of(&to);
    assert_eq!(q["state"], "st-1");
    (q["code"].clone(), consent)
}

async fn redeem(
    c: &Cloud,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    client: &str,
) -> (u16, Value) {
    c.form(
        "/organizations/oauth2/v2.0/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn unknown_clients_and_unregistered_redirects_get_an_error_page_never_a_redirect() {
    let c = start().await;
    let (_, challenge) = pkce();
    let b = browser();
    // An unknown client.
    let mut q = cli_request(&challenge, "s");
    q[0].1 = "11111111-2222-4333-8444-555555555555".into();
    let r = b
        .get(authorize_url(&c, "organizations", &q))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(location(&r).is_none());
    let page = body(r).await;
    assert!(page.contains("AADSTS700016"), "{page}");
    // Its form post is refused the same way (no redirect to the given URI).
    let r = submit(
        &c,
        "organizations",
        &q,
        "admin@contoso.example",
        DEV_PASSWORD,
        "cancel",
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(location(&r).is_none());

    // Redirect URIs that are not registered: another site, a loopback without a port, the
    // admin center's callback on another host, and the admin center's callback for the CLI.
    for (client, uri) in [
        (PUBLIC_CLIENT_ID, "https://evil.example/cb".to_string()),
        (PUBLIC_CLIENT_ID, "http://127.0.0.1/cb".to_string()),
        (
            PUBLIC_CLIENT_ID,
            "http://127.0.0.1.evil.example:80/cb".to_string(),
        ),
        (
            ADMIN_CENTER,
            "https://evil.example/admin/callback".to_string(),
        ),
        (ADMIN_CENTER, LOOPBACK.to_string()),
        (ADMIN_CENTER, c.url("/admin/callback/../../evil")),
    ] {
        let mut q = cli_request(&challenge, "s");
        q[0].1 = client.into();
        q[2].1 = uri.clone();
        let r = b
            .get(authorize_url(&c, "organizations", &q))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{client} {uri}");
        assert!(location(&r).is_none(), "{client} {uri}");
        let page = body(r).await;
        assert!(page.contains("AADSTS50011"), "{uri}: {page}");
        // A cancel posted with it does not redirect either.
        let r = submit(&c, "organizations", &q, "", "", "cancel").await;
        assert_eq!(r.status(), 400, "{uri}");
        assert!(location(&r).is_none(), "{uri}");
    }
    // An unknown tenant: an error page.
    let r = b
        .get(authorize_url(
            &c,
            "nowhere.example",
            &cli_request(&challenge, "s"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(location(&r).is_none());
    c.running.shutdown().await;
}

#[tokio::test]
async fn pkce_is_required_and_only_s256() {
    let c = start().await;
    let (_, challenge) = pkce();
    let b = browser();
    type Change = fn(&mut Request);
    let cases: [(&str, Change); 4] = [
        ("no code_challenge", |q| {
            q.retain(|(k, _)| *k != "code_challenge")
        }),
        ("no method", |q| {
            q.retain(|(k, _)| *k != "code_challenge_method")
        }),
        ("plain", |q| q[6].1 = "plain".into()),
        ("a short challenge", |q| q[5].1 = "abc".into()),
    ];
    for (what, f) in cases {
        let mut q = cli_request(&challenge, "state-42");
        f(&mut q);
        let r = b
            .get(authorize_url(&c, "organizations", &q))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{what}");
        let to = location(&r).unwrap();
        assert!(to.starts_with(LOOPBACK), "{what}: {to}");
        let rq = query_of(&to);
        assert_eq!(rq["error"], "invalid_request", "{what}");
        assert_eq!(rq["state"], "state-42", "{what}");
        assert!(!rq.contains_key("code"), "{what}");
        // Posting the credentials with such a request issues no code either.
        let r = submit(
            &c,
            "organizations",
            &q,
            "admin@contoso.example",
            DEV_PASSWORD,
            "signin",
        )
        .await;
        let to = location(&r).unwrap_or_default();
        assert!(!query_of(&to).contains_key("code"), "{what}: {to}");
    }
    // response_type other than code.
    let mut q = cli_request(&challenge, "s");
    q[1].1 = "token".into();
    let r = b
        .get(authorize_url(&c, "organizations", &q))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_of(&location(&r).unwrap())["error"],
        "unsupported_response_type"
    );
    c.running.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_shows_the_sign_in_page_again_and_cancel_is_access_denied() {
    let c = start().await;
    let (_, challenge) = pkce();
    let q = cli_request(&challenge, "st-9");
    // The page itself.
    let r = browser()
        .get(authorize_url(&c, "contoso.example", &q))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = body(r).await;
    assert!(page.contains(r#"name="password""#), "{page}");
    assert_eq!(hidden(&page, "state").as_deref(), Some("st-9"));

    let r = submit(
        &c,
        "organizations",
        &q,
        "admin@contoso.example",
        "wrong",
        "signin",
    )
    .await;
    assert!(location(&r).is_none());
    assert!(r.status().is_client_error(), "{}", r.status());
    let page = body(r).await;
    assert!(page.contains(r#"id="signin-error""#), "{page}");
    assert!(page.contains("incorrect"), "{page}");
    assert!(!page.contains("code="), "{page}");
    // The page keeps the request and the UPN typed, not the password.
    assert_eq!(
        hidden(&page, "code_challenge").as_deref(),
        Some(challenge.as_str())
    );
    assert!(page.contains(r#"value="admin@contoso.example""#), "{page}");
    assert!(!page.contains("value=\"wrong\""), "{page}");

    // Cancel: back to the client with access_denied and the state.
    let r = submit(&c, "organizations", &q, "", "", "cancel").await;
    assert_eq!(r.status(), 303);
    let rq = query_of(&location(&r).unwrap());
    assert_eq!(rq["error"], "access_denied");
    assert_eq!(rq["state"], "st-9");
    assert!(!rq.contains_key("code"));

    // A person of another tenant at a tenant's authority: refused, no code.
    let r = submit(
        &c,
        "contoso.example",
        &q,
        "admin@fabrikam.example",
        DEV_PASSWORD,
        "signin",
    )
    .await;
    assert!(location(&r).is_none());
    assert!(body(r).await.contains("AADSTS50020"));

    // Declining the consent: access_denied too.
    let r = submit(
        &c,
        "organizations",
        &q,
        "helpdesk@contoso.example",
        DEV_PASSWORD,
        "signin",
    )
    .await;
    assert_eq!(r.status(), 200);
    let ticket = hidden(&body(r).await, "ticket").unwrap();
    let r = browser()
        .post(c.url("/organizations/oauth2/v2.0/authorize"))
        .form(&[
            ("step", "consent"),
            ("ticket", ticket.as_str()),
            ("decision", "cancel"),
        ])
        .send()
        .await
        .unwrap();
    let rq = query_of(&location(&r).unwrap());
    assert_eq!(rq["error"], "access_denied");
    assert_eq!(rq["state"], "st-9");
    // The ticket is used up.
    let r = browser()
        .post(c.url("/organizations/oauth2/v2.0/authorize"))
        .form(&[
            ("step", "consent"),
            ("ticket", ticket.as_str()),
            ("decision", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(location(&r).is_none());
    c.running.shutdown().await;
}

#[tokio::test]
async fn consent_is_asked_once_and_codes_redeem_once_with_their_verifier() {
    let c = start().await;
    let (verifier, challenge) = pkce();
    let (code, consent) = cli_code(&c, "readonly@contoso.example", &challenge).await;
    assert!(consent, "the first sign-in asks for consent");

    // The wrong verifier, the wrong redirect URI, another client: invalid_grant.
    let (other_verifier, _) = pkce();
    let (s, v) = redeem(&c, &code, LOOPBACK, &other_verifier, PUBLIC_CLIENT_ID).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (s, v) = redeem(
        &c,
        &code,
        "http://127.0.0.1:8401/cb",
        &verifier,
        PUBLIC_CLIENT_ID,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (s, v) = redeem(&c, &code, LOOPBACK, &verifier, ADMIN_CENTER).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (s, v) = redeem(&c, &code, LOOPBACK, "", PUBLIC_CLIENT_ID).await;
    assert_eq!(s, 400, "{v}");

    // The right one.
    let (s, tok) = redeem(&c, &code, LOOPBACK, &verifier, PUBLIC_CLIENT_ID).await;
    assert_eq!(s, 200, "{tok}");
    let access = tok["access_token"].as_str().unwrap();
    assert!(tok["refresh_token"].is_string(), "{tok}");
    // The access token acts as that person.
    let (s, ov) = c.get(access, "/api/v1/overview").await;
    assert_eq!(s, 200, "{ov}");
    assert_eq!(ov["tenant_id"], CONTOSO_TENANT_ID);
    let (s, me) = c.get(access, "/v1.0/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["userPrincipalName"], "readonly@contoso.example", "{me}");

    // A second redemption: invalid_grant.
    let (s, v) = redeem(&c, &code, LOOPBACK, &verifier, PUBLIC_CLIENT_ID).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    // And a third (the replayed code is forgotten): still invalid_grant, not an unknown tenant.
    let (s, v) = redeem(&c, &code, LOOPBACK, &verifier, PUBLIC_CLIENT_ID).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    // A made-up code.
    let (s, v) = redeem(&c, "nonsense", LOOPBACK, &verifier, PUBLIC_CLIENT_ID).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // The second sign-in of the same person to the same client: a code at once.
    let (verifier2, challenge2) = pkce();
    let (code2, consent) = cli_code(&c, "readonly@contoso.example", &challenge2).await;
    assert!(!consent, "consent is asked only once");
    let (s, tok) = redeem(&c, &code2, LOOPBACK, &verifier2, PUBLIC_CLIENT_ID).await;
    assert_eq!(s, 200, "{tok}");
    // Another person is asked.
    let (_, challenge3) = pkce();
    let (_, consent) = cli_code(&c, "helpdesk@contoso.example", &challenge3).await;
    assert!(consent, "consent is per person");
    c.running.shutdown().await;
}

#[tokio::test]
async fn the_discovery_document_names_the_authorization_endpoint() {
    let c = start().await;
    let v: Value = c
        .http
        .get(c.url("/contoso.example/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ep = v["authorization_endpoint"].as_str().unwrap();
    assert_eq!(
        ep,
        c.url(&format!("/{CONTOSO_TENANT_ID}/oauth2/v2.0/authorize"))
    );
    assert_eq!(v["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        v["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("authorization_code"))
    );
    // The endpoint it names serves the sign-in page.
    let (_, challenge) = pkce();
    let r = browser()
        .get(format!(
            "{ep}?{}",
            serde_urlencoded::to_string(cli_request(&challenge, "s")).unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The console

const PAGES: [&str; 11] = [
    "/admin/",
    "/admin/devices",
    "/admin/devices?q=PC",
    "/admin/devices.csv",
    "/admin/endpoint-analytics",
    "/admin/antivirus",
    "/admin/comanagement",
    "/admin/tenant",
    "/admin/hierarchies/5a1e0000-0000-4000-8000-000000000001/devices/1",
    "/admin/hierarchies/5a1e0000-0000-4000-8000-000000000001/offboard",
    "/admin/actions/00000000-0000-4000-8000-000000000000",
];

#[tokio::test]
async fn every_page_without_a_session_redirects_to_sign_in_and_shows_nothing() {
    let c = start().await;
    let admin = populated(&c).await;
    for p in PAGES {
        for cookie in [None, Some("ca_session=forged-or-old")] {
            let mut rb = browser().get(c.url(p));
            if let Some(k) = cookie {
                rb = rb.header("cookie", k);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let to = location(&r);
            let text = body(r).await;
            if cookie.is_none() {
                assert_eq!(status, 303, "{p}");
                let expect = format!(
                    "/admin/signin?{}",
                    serde_urlencoded::to_string([("return_to", p)]).unwrap()
                );
                assert_eq!(to.as_deref(), Some(expect.as_str()), "{p}");
            } else {
                // An unknown session id: the signed-out state, never the page.
                assert!(status == 303 || status == 401, "{p}: {status}");
            }
            for secret in ["PC-00001", HID, "Contoso", CONTOSO_TENANT_ID, "csrf"] {
                assert!(!text.contains(secret), "{p} shows {secret}: {text}");
            }
        }
    }
    // A post without a session: 401, nothing changed.
    let hpath = format!("/admin/hierarchies/{HID}");
    for (p, form) in [
        (
            "/admin/tenant/intune-rbac".to_string(),
            vec![("use_intune_rbac", "true"), ("csrf", "x")],
        ),
        (
            "/admin/tenant/roles".to_string(),
            vec![
                ("user", "user@contoso.example"),
                ("role", "Help Desk Operator"),
                ("csrf", "x"),
            ],
        ),
        (
            format!("{hpath}/offboard"),
            vec![("confirm", "PS1"), ("csrf", "x")],
        ),
        (
            format!("{hpath}/devices/1/actions"),
            vec![("action", "x"), ("csrf", "x")],
        ),
        ("/admin/signout".to_string(), vec![("csrf", "x")]),
    ] {
        let r = post_form(&c, None, &p, &form, None).await;
        let status = r.status().as_u16();
        if p == "/admin/signout" {
            // Signing out without a session is harmless: the signed-out page.
            assert!(status == 200 || status == 401, "{p}: {status}");
            continue;
        }
        assert_eq!(status, 401, "{p}");
        assert!(location(&r).is_none(), "{p}");
        let text = body(r).await;
        assert!(text.contains("signin-link"), "{p}: {text}");
    }
    assert_eq!(use_intune_rbac(&c, &admin).await, json!(false));
    assert_eq!(
        c.get(&admin, &format!("/api/v1/hierarchies/{HID}")).await.0,
        200
    );
    let (_, ra) = c.get(&admin, "/api/v1/roleAssignments").await;
    assert!(!ra.to_string().contains("user@contoso.example"), "{ra}");
    c.running.shutdown().await;
}

#[tokio::test]
async fn posts_need_the_session_csrf_token_and_the_service_origin() {
    let c = start().await;
    let admin = c.admin().await;
    let s = sign_in(&c, "admin@contoso.example").await;
    let on = [("use_intune_rbac", "true")];
    let p = "/admin/tenant/intune-rbac";
    // No token, a wrong one, another session's.
    let other = sign_in(&c, "admin@contoso.example").await;
    assert_ne!(other.csrf, s.csrf);
    for form in [
        vec![on[0]],
        vec![on[0], ("csrf", "")],
        vec![on[0], ("csrf", "not-the-token")],
        vec![on[0], ("csrf", other.csrf.as_str())],
    ] {
        let r = post_form(&c, Some(&s), p, &form, None).await;
        assert_eq!(r.status(), 403, "{form:?}");
        assert!(location(&r).is_none());
        assert_eq!(use_intune_rbac(&c, &admin).await, json!(false), "{form:?}");
    }
    // The right token, but from another site (or an opaque origin, or another scheme).
    let https_self = c.base.replacen("http://", "https://", 1);
    for origin in [
        "https://evil.example",
        "null",
        https_self.as_str(),
        "http://127.0.0.1",
    ] {
        let r = post_form(
            &c,
            Some(&s),
            p,
            &[on[0], ("csrf", s.csrf.as_str())],
            Some(origin),
        )
        .await;
        assert_eq!(r.status(), 403, "Origin {origin}");
        assert_eq!(use_intune_rbac(&c, &admin).await, json!(false), "{origin}");
    }
    // The right token: changed (with the service's own Origin, and without one).
    let r = post_form(
        &c,
        Some(&s),
        p,
        &[on[0], ("csrf", s.csrf.as_str())],
        Some(&c.base),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r).as_deref(), Some("/admin/tenant?saved=1"));
    assert_eq!(use_intune_rbac(&c, &admin).await, json!(true));
    let r = post_form(&c, Some(&s), p, &[("csrf", s.csrf.as_str())], None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(use_intune_rbac(&c, &admin).await, json!(false));
    // Sign-out needs the token too.
    let r = post_form(&c, Some(&s), "/admin/signout", &[("csrf", "x")], None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(page(&c, Some(&s), "/admin/").await.status(), 200);
    c.running.shutdown().await;
}

#[tokio::test]
async fn the_session_cookie_is_a_random_http_only_lax_cookie_of_admin() {
    let c = start().await;
    let b = browser();
    let r = b.get(c.url("/admin/signin")).send().await.unwrap();
    let (_, raw) = cookie_set(r.headers(), "ca_signin").unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/admin", "Max-Age="] {
        assert!(raw.contains(flag), "ca_signin lacks {flag}: {raw}");
    }
    // Drive the flow once more by hand to see the session cookie's header.
    let s = sign_in(&c, "admin@contoso.example").await;
    let start = b.get(c.url("/admin/signin")).send().await.unwrap();
    let (signin, _) = cookie_set(start.headers(), "ca_signin").unwrap();
    let q = query_of(&location(&start).unwrap());
    let mut form: Vec<(String, String)> = q.into_iter().collect();
    form.extend([
        ("step".into(), "signin".into()),
        ("upn".into(), "admin@contoso.example".into()),
        ("password".into(), DEV_PASSWORD.into()),
        ("decision".into(), "signin".into()),
    ]);
    let r = b
        .post(c.url("/organizations/oauth2/v2.0/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "consented already: a code at once");
    let cb = location(&r).unwrap();
    let r = b
        .get(&cb)
        .header("cookie", format!("ca_signin={signin}"))
        .send()
        .await
        .unwrap();
    let mut all = set_cookies(r.headers());
    let (id, raw) = cookie_set(r.headers(), "ca_session").unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/admin", "Max-Age=28800"] {
        assert!(raw.contains(flag), "ca_session lacks {flag}: {raw}");
    }
    // Not a JWT, not a bearer token: a random id; no cookie carries a token.
    assert!(!id.contains('.'), "{id}");
    assert!(!id.starts_with("eyJ"), "{id}");
    assert!(id.len() >= 32, "{id}");
    assert_ne!(id, s.cookie);
    all.extend(set_cookies(start.headers()));
    for k in &all {
        assert!(!k.contains("eyJ"), "a token in a cookie: {k}");
    }
    // Nor does a page show the token.
    let r = page(&c, Some(&s), "/admin/").await;
    let text = body(r).await;
    assert!(!text.contains("eyJ"), "{text}");
    // The callback's code is spent: replaying the callback gives no session.
    let r = b
        .get(&cb)
        .header("cookie", format!("ca_signin={signin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(cookie_set(r.headers(), "ca_session").is_none_or(|(v, _)| v.is_empty()));
    // A callback without the sign-in cookie (a code injected from elsewhere): refused.
    let r = b.get(&cb).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(cookie_set(r.headers(), "ca_session").is_none_or(|(v, _)| v.is_empty()));
    c.running.shutdown().await;
}

#[tokio::test]
async fn console_responses_carry_the_security_headers() {
    let c = start().await;
    populated(&c).await;
    let s = sign_in(&c, "admin@contoso.example").await;
    let check = |p: &str, h: &HeaderMap| {
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{p}: no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{p}: {csp}");
        assert!(csp.contains("form-action 'self'"), "{p}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{p}");
        assert_eq!(h["cache-control"], "no-store", "{p}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{p}");
    };
    for p in PAGES {
        if p == "/admin/devices.csv" || p.starts_with("/admin/actions/") {
            continue;
        }
        let r = page(&c, Some(&s), p).await;
        assert_eq!(r.status(), 200, "{p}");
        check(p, r.headers());
    }
    // The CSV is not cached either.
    let r = page(&c, Some(&s), "/admin/devices.csv").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // Error pages too: a refused post, a signed-out page, a 404.
    let r = post_form(&c, Some(&s), "/admin/tenant/intune-rbac", &[], None).await;
    assert_eq!(r.status(), 403);
    check("refused post", r.headers());
    let r = post_form(&c, None, "/admin/tenant/intune-rbac", &[], None).await;
    assert_eq!(r.status(), 401);
    check("no session", r.headers());
    let r = page(
        &c,
        Some(&s),
        "/admin/hierarchies/5a1e0000-0000-4000-8000-00000000dead/devices/1",
    )
    .await;
    assert_eq!(r.status(), 404);
    check("404", r.headers());
    // The redirects are not cached.
    let r = page(&c, None, "/admin/").await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    // The authorization pages too.
    let (_, challenge) = pkce();
    let r = browser()
        .get(authorize_url(
            &c,
            "organizations",
            &cli_request(&challenge, "s"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    check("authorize", r.headers());
    c.running.shutdown().await;
}

#[tokio::test]
async fn an_idle_session_expires() {
    let c = start_with(ServeOptions {
        session_idle_secs: 1,
        ..opts()
    })
    .await;
    let s = sign_in(&c, "admin@contoso.example").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = page(&c, Some(&s), "/admin/").await;
    let status = r.status().as_u16();
    assert!(status == 303 || status == 401, "{status}");
    let text = body(r).await;
    assert!(!text.contains("Contoso"), "{text}");
    assert!(!text.contains(&s.csrf), "{text}");
    // It stays ended, and it cannot post.
    assert_eq!(page(&c, Some(&s), "/admin/").await.status(), 401);
    let r = post_form(
        &c,
        Some(&s),
        "/admin/tenant/intune-rbac",
        &[("use_intune_rbac", "true"), ("csrf", s.csrf.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status(), 401);
    c.running.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_at_its_maximum_age_even_when_used() {
    let c = start_with(ServeOptions {
        session_max_secs: 2,
        ..opts()
    })
    .await;
    let s = sign_in(&c, "admin@contoso.example").await;
    let t0 = Instant::now();
    let mut ended = false;
    while t0.elapsed() < Duration::from_millis(3500) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = t0.elapsed();
        let status = page(&c, Some(&s), "/admin/").await.status().as_u16();
        if before < Duration::from_millis(1500) {
            assert_eq!(status, 200, "at {before:?}");
        } else if before >= Duration::from_millis(2000) {
            assert!(status == 303 || status == 401, "at {before:?}: {status}");
            ended = true;
        }
    }
    assert!(ended);
    c.running.shutdown().await;
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let c = start().await;
    let s = sign_in(&c, "admin@contoso.example").await;
    let keep = sign_in(&c, "admin@contoso.example").await;
    assert_eq!(page(&c, Some(&s), "/admin/devices").await.status(), 200);
    let r = post_form(
        &c,
        Some(&s),
        "/admin/signout",
        &[("csrf", s.csrf.as_str())],
        Some(&c.base),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (v, raw) = cookie_set(r.headers(), "ca_session").expect("the cookie is cleared");
    assert_eq!(v, "");
    assert!(raw.contains("Max-Age=0"), "{raw}");
    assert!(raw.contains("Path=/admin"), "{raw}");
    // The old cookie no longer works, for pages or posts.
    let r = page(&c, Some(&s), "/admin/devices").await;
    assert!(matches!(r.status().as_u16(), 303 | 401), "{}", r.status());
    let r = post_form(
        &c,
        Some(&s),
        "/admin/tenant/intune-rbac",
        &[("use_intune_rbac", "true"), ("csrf", s.csrf.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status(), 401);
    // Another session of the same person is not affected.
    assert_eq!(page(&c, Some(&keep), "/admin/devices").await.status(), 200);
    c.running.shutdown().await;
}

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let c = start().await;
    let admin = populated(&c).await;
    // Fabrikam attaches a hierarchy of its own.
    let fab = c.sign_in(FABRIKAM, "admin@fabrikam.example").await;
    let (s, v) = c
        .put(
            &fab,
            &format!("/api/v1/hierarchies/{FAB_HID}"),
            json!({"site_code":"FB1","site_name":"Fabrikam","site_version":"2303","environment":"public"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = c
        .put(
            &fab,
            &format!("/api/v1/hierarchies/{FAB_HID}/features/tenant-attach"),
            json!({"settings":{}}),
        )
        .await;
    assert!(s == 201 || s == 200, "{v}");
    let (s, v) = c
        .post(
            &fab,
            &format!("/api/v1/hierarchies/{FAB_HID}/upload/devices"),
            device_batch(1..3),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let s = sign_in(&c, "admin@contoso.example").await;
    // Contoso's own device is there.
    let r = page(&c, Some(&s), &format!("/admin/hierarchies/{HID}/devices/1")).await;
    assert_eq!(r.status(), 200);
    // Fabrikam's are not.
    for p in [
        format!("/admin/hierarchies/{FAB_HID}/devices/1"),
        format!("/admin/hierarchies/{FAB_HID}/offboard"),
    ] {
        let r = page(&c, Some(&s), &p).await;
        assert_eq!(r.status(), 404, "{p}");
        let text = body(r).await;
        assert!(
            !text.contains("FB1") && !text.contains("Fabrikam"),
            "{p}: {text}"
        );
    }
    let r = post_form(
        &c,
        Some(&s),
        &format!("/admin/hierarchies/{FAB_HID}/offboard"),
        &[("confirm", "FB1"), ("csrf", s.csrf.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = post_form(
        &c,
        Some(&s),
        &format!("/admin/hierarchies/{FAB_HID}/devices/1/actions"),
        &[("action", "Sync"), ("csrf", s.csrf.as_str())],
        None,
    )
    .await;
    assert!(matches!(r.status().as_u16(), 400 | 404), "{}", r.status());
    // Fabrikam still has it; contoso's devices list does not show it.
    assert_eq!(
        c.get(&fab, &format!("/api/v1/hierarchies/{FAB_HID}"))
            .await
            .0,
        200
    );
    let text = body(page(&c, Some(&s), "/admin/devices").await).await;
    assert!(!text.contains(FAB_HID), "{text}");
    let csv = body(page(&c, Some(&s), "/admin/devices.csv").await).await;
    assert!(!csv.contains(FAB_HID), "{csv}");
    let _ = admin;
    c.running.shutdown().await;
}

#[tokio::test]
async fn an_account_without_a_read_role_is_told_why() {
    let c = start().await;
    populated(&c).await;
    let s = sign_in(&c, "user@contoso.example").await;
    let r = page(&c, Some(&s), "/admin/").await;
    assert_eq!(r.status(), 403);
    let text = body(r).await;
    assert!(text.contains(r#"id="no-role""#), "{text}");
    assert!(text.contains("user@contoso.example"), "{text}");
    assert!(!text.contains("PC-00001"), "{text}");
    // Other pages refuse with a reason, not a blank page.
    for p in [
        "/admin/devices",
        "/admin/hierarchies/5a1e0000-0000-4000-8000-000000000001/devices/1",
    ] {
        let r = page(&c, Some(&s), p).await;
        assert_eq!(r.status(), 403, "{p}");
        let text = body(r).await;
        assert!(text.contains("user@contoso.example"), "{p}: {text}");
        assert!(!text.contains("PC-00001"), "{p}: {text}");
    }
    c.running.shutdown().await;
}

#[tokio::test]
async fn return_to_is_followed_only_within_the_console() {
    let c = start().await;
    let (_, landed) = sign_in_to(&c, "admin@contoso.example", Some("https://evil.example/")).await;
    assert_eq!(landed, "/admin/");
    for evil in [
        "//evil.example/admin",
        "/\\evil.example",
        "/admin\\..\\..\\x",
        "https://evil.example/admin/",
        "/admin/callback?code=x",
    ] {
        let (_, landed) = sign_in_to(&c, "admin@contoso.example", Some(evil)).await;
        assert_eq!(landed, "/admin/", "{evil}");
    }
    let (_, landed) = sign_in_to(&c, "admin@contoso.example", Some("/admin/devices?q=PC")).await;
    assert_eq!(landed, "/admin/devices?q=PC");
    // A page asked without a session comes back after sign-in.
    let r = page(&c, None, "/admin/antivirus").await;
    let to = location(&r).unwrap();
    let rt = query_of(&to)["return_to"].clone();
    let (_, landed) = sign_in_to(&c, "admin@contoso.example", Some(&rt)).await;
    assert_eq!(landed, "/admin/antivirus");
    c.running.shutdown().await;
}
