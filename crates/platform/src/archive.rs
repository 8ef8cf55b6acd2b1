//! Cold storage for archived records: gzip-compressed JSON Lines objects in an object store addressed by URL
//! (`file:///var/lib/signup/archive` by default; `s3://bucket/prefix` for S3 or any S3-compatible store, with the
//! standard `AWS_*` variables: credentials, `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for MinIO and the
//! like). An object counts as archived only once it has been written and read back intact, so callers delete
//! the hot rows after [`ColdStorage::put_verified`] returns and never before.

use std::{io::Write as _, sync::Arc};

use anyhow::Context as _;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use object_store::{
    ObjectStore, ObjectStoreExt as _, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};

/// `ARCHIVE_URL` if set, else `file://` of `.archive` under the working directory.
pub fn url_or_default(configured: Option<String>) -> Result<String, crate::settings::SettingsError> {
    match configured.filter(|url| !url.trim().is_empty()) {
        Some(url) => {
            let parsed =
                url::Url::parse(&url).map_err(|e| crate::settings::SettingsError::invalid("ARCHIVE_URL", e))?;
            if !matches!(parsed.scheme(), "file" | "s3" | "s3a") {
                return Err(crate::settings::SettingsError::invalid("ARCHIVE_URL", "must be a file:// or s3:// URL"));
            }
            Ok(url)
        }
        None => {
            let dir = std::path::absolute(".archive")
                .map_err(|e| crate::settings::SettingsError::invalid("ARCHIVE_URL", e))?;
            url::Url::from_directory_path(&dir)
                .map(String::from)
                .map_err(|()| crate::settings::SettingsError::invalid("ARCHIVE_URL", "no default directory"))
        }
    }
}

/// An object store and the prefix archives go under.
#[derive(Debug, Clone)]
pub struct ColdStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
}

impl ColdStorage {
    /// The store `url` names: `file:///absolute/dir` or `s3://bucket/optional/prefix`. Creates a local directory if
    /// needed; does no network I/O.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).context("ARCHIVE_URL is not a URL")?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| anyhow::anyhow!("ARCHIVE_URL: not an absolute path"))?;
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                // Written through to the disk before the write returns, as S3's put is: the rows it holds are
                // deleted once it is read back, and a read-back from the page cache proves nothing after a crash.
                let store = LocalFileSystem::new_with_prefix(&dir)?.with_fsync(true);
                Ok(Self { store: Arc::new(store), prefix: Path::default(), location: url.to_owned() })
            }
            "s3" | "s3a" => {
                let bucket = parsed.host_str().context("ARCHIVE_URL: no bucket")?;
                crate::tls::install_provider();
                let store = AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
                let prefix = Path::from(parsed.path().trim_matches('/'));
                Ok(Self { store: Arc::new(store), prefix, location: format!("s3://{bucket}{}", parsed.path()) })
            }
            other => anyhow::bail!("ARCHIVE_URL: unsupported scheme {other} (use file:// or s3://)"),
        }
    }

    /// Where archives go, safe to log.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes `records` as one gzip JSON Lines object at `key` (under the prefix), reads it back and checks that
    /// it holds exactly those records. Writing the same key again replaces the object, so a batch retried after a
    /// crash leaves one copy. Returns the object's path.
    pub async fn put_verified(&self, key: &str, records: &[serde_json::Value]) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        for record in records {
            serde_json::to_writer(&mut lines, record)?;
            lines.push(b'\n');
        }
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&lines)?;
        let compressed = encoder.finish()?;
        let parts = key.split('/').filter(|part| !part.is_empty()).map(object_store::path::PathPart::from);
        let path: Path = self.prefix.parts().chain(parts).collect();
        self.store.put(&path, PutPayload::from(compressed)).await.with_context(|| format!("writing {path}"))?;
        let stored = self.store.get(&path).await?.bytes().await.with_context(|| format!("reading back {path}"))?;
        let mut read_back = Vec::new();
        std::io::Read::read_to_end(&mut GzDecoder::new(stored.as_ref()), &mut read_back)
            .with_context(|| format!("{path} does not decompress"))?;
        anyhow::ensure!(read_back == lines, "{path} read back differs from what was written");
        Ok(path.to_string())
    }

    /// Reads an archive back as records: for audits and tests.
    pub async fn read(&self, path: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let stored = self.store.get(&Path::from(path)).await?.bytes().await?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut GzDecoder::new(stored.as_ref()), &mut text)?;
        text.lines().map(|line| serde_json::from_str(line).map_err(anyhow::Error::from)).collect()
    }
}
