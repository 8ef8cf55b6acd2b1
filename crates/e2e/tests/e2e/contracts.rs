//! The API keeps its OpenAPI document: schemathesis (a property-based OpenAPI checker, from PyPI) generates
//! requests from `/openapi.json`, valid and invalid, sends them to the real stack and runs every check it has
//! (status codes, content types, headers and bodies as documented, schema-valid input accepted, schema-violating
//! input refused, no server error). `crates/e2e/contracts/schemathesis.toml` lists the few answers a valid request
//! may still get for a rule JSON Schema cannot state.

use std::path::{Path, PathBuf};

use e2e::stack::{DELIVERY_TIMEOUT, Stack};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// Where schemathesis is: `SCHEMATHESIS`, or the validators' virtualenv of `deploy/install-tools.sh`.
#[allow(clippy::disallowed_methods, reason = "the harness, not a service, finds its tools")]
fn schemathesis() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return Ok(path.into());
    }
    let tools = std::env::var_os("DEPLOY_TOOLS_DIR").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
        cache
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
            .map(|cache| cache.join("signup-deploy-tools"))
    });
    let path = tools.map(|tools| tools.join("venv/bin/schemathesis")).filter(|path| path.exists());
    path.ok_or_else(|| anyhow::anyhow!("schemathesis not found: run deploy/install-tools.sh, or set SCHEMATHESIS"))
}

/// Runs schemathesis with every check against the stack's API, authenticated with `token`; fails with its report.
async fn run_schemathesis(stack: &Stack, token: &str, operations: (&str, &str)) -> anyhow::Result<()> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/schemathesis.toml");
    let work = std::env::temp_dir().join(format!("e2e-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work)?;
    let api = stack.api_url();
    let output = tokio::process::Command::new(schemathesis()?)
        .current_dir(&work)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{api}/openapi.json"), "--url", &api, "--checks", "all", "--max-examples", "25"])
        .args(["-H", &format!("Authorization: Bearer {token}"), operations.0, operations.1])
        .output()
        .await?;
    let _ = std::fs::remove_dir_all(&work);
    let report = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(report.contains("passed"), "schemathesis ran nothing:\n{report}");
    Ok(())
}

#[tokio::test]
async fn the_api_keeps_its_openapi_document() -> anyhow::Result<()> {
    let mut stack = Stack::start().await?;
    stack.wait_ready().await?;
    // A verified account with a session, so the authenticated operations answer more than 401 and 403.
    let email = format!("contract-{}@example.com", uuid::Uuid::now_v7().simple());
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
    assert_eq!(stack.signup(&body, None).await?.status(), 202);
    let mail = stack.smtp.wait_for(&email, 1, DELIVERY_TIMEOUT).await?.remove(0);
    let token = mail.token().ok_or_else(|| anyhow::anyhow!("no token in the mail"))?;
    assert_eq!(stack.confirm(&token, PASSWORD).await?.status(), 200);
    let session = stack.session(&email, PASSWORD).await?;

    // Signing out ends the session the rest needs: it runs last, on its own.
    run_schemathesis(&stack, &session, ("--exclude-name", "DELETE /v1/sessions/current")).await?;
    run_schemathesis(&stack, &session, ("--include-name", "DELETE /v1/sessions/current")).await?;
    Ok(())
}
