//! Payloads: realistic `user.account.update_profile` LogEvents (~1.7 KB) in hook envelopes.

#[allow(unused_imports)]
use super::*;

/// One LogEvent as Okta sends it, with `@UUID@` where the uuid goes.
pub(crate) const EVENT_JSON: &str = r#"{"uuid":"@UUID@","published":"2026-11-28T10:15:32.159Z","eventType":"user.account.update_profile","version":"0","displayMessage":"Update user profile for Okta","severity":"INFO","client":{"userAgent":{"rawUserAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36","os":"Mac OS X","browser":"CHROME"},"zone":"null","device":"Computer","id":null,"ipAddress":"198.51.100.23","geographicalContext":{"city":"Toronto","state":"Ontario","country":"Canada","postalCode":"M4M","geolocation":{"lat":43.6567,"lon":-79.34}},"ipChain":[{"ip":"198.51.100.23","geographicalContext":{"city":"Toronto","state":"Ontario","country":"Canada","postalCode":"M4M","geolocation":{"lat":43.6567,"lon":-79.34}},"version":"V4","source":null}]},"device":null,"actor":{"id":"00uz9fj5aT69fHVro1d6","type":"User","alternateId":"admin@example.com","displayName":"Admin Name","detailEntry":null},"outcome":{"result":"SUCCESS","reason":null},"target":[{"id":"00u1b2c3d4e5f6g7h8i9","type":"User","alternateId":"jane.doe@example.com","displayName":"Jane Doe","detailEntry":null}],"transaction":{"type":"WEB","id":"ZCCzm8j2wTvzwele2NwLnwAADSc","detail":{}},"debugContext":{"debugData":{"changedAttributes":"lastName,mobilePhone,title","requestId":"ZCCzm8j2wTvzwele2NwLnwAADSc","dtHash":"f59d98b2e02f1319ef4ca651f57c36e3f25507f67dd6daf0408f753896b7e8dc","requestUri":"/api/v1/users/00u1b2c3d4e5f6g7h8i9","url":"/api/v1/users/00u1b2c3d4e5f6g7h8i9?"}},"legacyEventType":"core.user.config.profile_update.success","authenticationContext":{"authenticationProvider":null,"credentialProvider":null,"credentialType":null,"issuer":null,"authenticationStep":0,"externalSessionId":"idxyNcxVX2ESsSL0u462548Qg","interface":null},"securityContext":{"asNumber":null,"asOrg":null,"isp":null,"domain":null,"isProxy":null},"insertionTimestamp":null}"#;

/// A uuid-shaped, unique id: `tag`, `lane` and `n` in hex; `n` is the last 12 digits.
pub(crate) fn uuid(tag: u32, lane: u16, n: u64) -> String {
    format!("{tag:08x}-{lane:04x}-4000-a000-{n:012x}")
}

/// The `n` of a [`uuid`].
pub(crate) fn uuid_n(uuid: &str) -> Option<u64> {
    uuid.get(24..).and_then(|n| u64::from_str_radix(n, 16).ok())
}

/// Builds hook deliveries quickly from the event template.
#[derive(Clone)]
pub(crate) struct Deliveries {
    pub(crate) before: &'static str,
    pub(crate) after: &'static str,
}

impl Deliveries {
    pub(crate) fn new() -> Self {
        let (before, after) = EVENT_JSON
            .split_once("@UUID@")
            .expect("template has a uuid slot");
        Self { before, after }
    }

    /// A delivery envelope carrying one event per uuid.
    pub(crate) fn body(&self, uuids: impl Iterator<Item = String>) -> Bytes {
        let mut body = String::with_capacity(2048 * 4);
        body.push_str(
            r#"{"eventType":"com.okta.event_hook","eventTypeVersion":"1.0","cloudEventsVersion":"0.1","source":"https://example.okta.com/api/v1/eventHooks/who7hphp39JoHLni81d7","eventId":""#,
        );
        body.push_str(&uuid(
            rand::random(),
            0,
            rand::random::<u64>() & 0xffff_ffff_ffff,
        ));
        body.push_str(r#"","data":{"events":["#);
        for (i, id) in uuids.enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(self.before);
            body.push_str(&id);
            body.push_str(self.after);
        }
        body.push_str(
            r#"]},"eventTime":"2026-11-28T10:15:33.093Z","contentType":"application/json"}"#,
        );
        Bytes::from(body)
    }
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

pub(crate) async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Result<(), String> {
    let response = client
        .post(url)
        .header("authorization", SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", response.status()))
    }
}
