//! The API's description: OpenAPI 3.1, generated from the handlers' own types and served at
//! `GET /openapi.json`.
//!
//! Where it sits: beside [`crate::http`]. Each handler carries a `#[utoipa::path]` attribute
//! naming its parameters and every status it can answer; the bodies are the very structs
//! the handlers serialise (they derive `ToSchema`), so the description cannot drift from
//! the wire format without the build or the contract test noticing. `utoipa` was chosen
//! because it derives the description at compile time from those types, with no runtime
//! reflection and no hand-kept YAML. CI runs `schemathesis` against a live server with this
//! description (`crates/server/tests/contract.rs`): every response must match it, and none
//! may be a 5xx.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "superres",
        description = "AI image super-resolution. `POST /enhance` answers the upscaled image \
                       itself; `POST /v1/jobs` queues one and answers at once, with its \
                       progress as server-sent events and its result to fetch. Errors are \
                       always `{\"error\", \"code\"}` JSON.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        http::healthz,
        http::readyz,
        http::metrics_text,
        http::enhance,
        http::create_job,
        http::job_status,
        http::cancel_job,
        http::job_events,
        http::job_result,
        http::list_models,
        http::reload_models,
        http::list_devices,
        http::openapi_json,
    ),
    modifiers(&BearerSchemes),
    tags(
        (name = "images", description = "Upscaling, waiting for the result"),
        (name = "jobs", description = "Upscaling as a job: queue, follow, fetch, cancel"),
        (name = "service", description = "Health, readiness, metrics, models and devices"),
        (name = "admin", description = "Needs the admin token"),
    )
)]
pub struct ApiDoc;

/// The two bearer credentials: an API key (when the server has a key file) and the admin
/// token.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme(
            "api_key",
            bearer(
                "An API key, required for submissions and jobs when the server runs with \
                 --api-keys; jobs are then visible only to the key that made them",
            ),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The admin token of --admin-token (or --admin-token-file)"),
        );
    }
}

/// The description as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the description failed: {e}\"}}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/enhance",
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/events",
            "/v1/jobs/{id}/result",
            "/v1/models",
            "/v1/models/reload",
            "/v1/devices",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is described");
        }
        let params = doc["paths"]["/v1/jobs"]["post"]["parameters"]
            .as_array()
            .unwrap();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{params:?}"
        );
        let view = &doc["components"]["schemas"]["JobView"]["properties"];
        for field in ["kind", "frames_done", "frames_total"] {
            assert!(view[field].is_object(), "JobView.{field}");
        }
        let enhance = &doc["paths"]["/enhance"]["post"];
        for status in ["200", "400", "413", "415", "422", "429", "503"] {
            assert!(
                enhance["responses"][status].is_object(),
                "/enhance answers {status}"
            );
        }
        let form = &enhance["requestBody"]["content"]["multipart/form-data"]["schema"];
        assert!(form.is_object(), "{enhance}");
        let schemas = &doc["components"]["schemas"];
        for name in ["JobView", "JobStatus", "ErrorBody", "ModelView", "Ready"] {
            assert!(schemas[name].is_object(), "schema {name}");
        }
        assert_eq!(
            schemas["JobStatus"]["enum"],
            serde_json::json!(["queued", "running", "done", "failed", "cancelled"])
        );
    }
}
