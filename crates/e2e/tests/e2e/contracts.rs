//! The API keeps its OpenAPI document: schemathesis (a property-based OpenAPI checker, from PyPI) generates
//! requests from `/openapi.json`, valid and invalid, sends them to the real stack and runs every check it has
//! (status codes, content types, headers and bodies as documented, schema-valid input accepted, schema-violating
//! input refused, no server error). `crates/e2e/contracts/schemathesis.toml` lists the few answers a valid request
//! may still get for a rule JSON Schema cannot state.

use std::path::{Path, PathBuf};

use e2e::stack::Stack;

/// Not the documents' example password: schemathesis sends the examples, and `DELETE /v1/me` with the right password
/// would delete the account the rest of the run needs.
const PASSWORD: &str = "another correct horse battery staple";

/// Where schemathesis is: `SCHEMATHESIS`, the validators' virtualenv of `deploy/install-tools.sh`, or a virtualenv
/// of its own under the user's cache, created here on first use (from PyPI, at the version install-tools.sh pins).
#[allow(clippy::disallowed_methods, reason = "the harness, not a service, finds its tools")]
async fn schemathesis() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return Ok(path.into());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
    let cache = cache.or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")));
    let cache = cache.ok_or_else(|| anyhow::anyhow!("no HOME to keep schemathesis in; set SCHEMATHESIS"))?;
    let tools = std::env::var_os("DEPLOY_TOOLS_DIR").map_or_else(|| cache.join("signup-deploy-tools"), PathBuf::from);
    for venv in [tools.join("venv"), cache.join("signup-test-tools")] {
        if venv.join("bin/schemathesis").exists() {
            return Ok(venv.join("bin/schemathesis"));
        }
    }
    let venv = cache.join("signup-test-tools");
    let script = include_str!("../../../../deploy/install-tools.sh");
    let pin = script.split_whitespace().find(|word| word.starts_with("schemathesis==")).unwrap_or("schemathesis");
    eprintln!("installing {pin} into {}", venv.display());
    let made = tokio::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().await?;
    anyhow::ensure!(made.success(), "python3 -m venv {} failed", venv.display());
    let pip = venv.join("bin/pip");
    let installed = tokio::process::Command::new(pip).args(["install", "--quiet", pin]).status().await?;
    anyhow::ensure!(installed.success(), "pip install {pin} failed");
    Ok(venv.join("bin/schemathesis"))
}

/// Runs schemathesis with every check against the stack's API, authenticated with `token`; fails with its report.
async fn run_schemathesis(stack: &Stack, token: &str, operations: (&str, &str)) -> anyhow::Result<()> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts/schemathesis.toml");
    let work = std::env::temp_dir().join(format!("e2e-schemathesis-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work)?;
    let api = stack.api_url();
    let output = tokio::process::Command::new(schemathesis().await?)
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
    let session = stack.verified_session(&email, PASSWORD).await?;

    // Signing out ends the session the rest needs: it runs last, on its own.
    run_schemathesis(&stack, &session, ("--exclude-name", "DELETE /v1/sessions/current")).await?;
    run_schemathesis(&stack, &session, ("--include-name", "DELETE /v1/sessions/current")).await?;
    Ok(())
}
