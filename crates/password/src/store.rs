//! The `credentials` table: one PHC string per user, versioned so an older attempt never overwrites a newer one.

use sqlx::PgPool;
use uuid::Uuid;

/// Stores `phc` for `user_id` unless a newer version is already stored. Returns whether it was stored.
pub(crate) async fn upsert(pool: &PgPool, user_id: Uuid, phc: &str, version: Uuid) -> sqlx::Result<bool> {
    let stored = sqlx::query(
        "INSERT INTO credentials (user_id, phc, version) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET phc = EXCLUDED.phc, version = EXCLUDED.version, updated_at = now() \
         WHERE credentials.version <= EXCLUDED.version",
    )
    .bind(user_id)
    .bind(phc)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(stored.rows_affected() == 1)
}

/// The stored PHC string of `user_id`, if any.
pub(crate) async fn find(pool: &PgPool, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT phc FROM credentials WHERE user_id = $1").bind(user_id).fetch_optional(pool).await
}

/// Replaces `old` with `new` (a rehash under current parameters) unless the credential changed meanwhile.
pub(crate) async fn replace(pool: &PgPool, user_id: Uuid, old: &str, new: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE credentials SET phc = $3, updated_at = now() WHERE user_id = $1 AND phc = $2")
        .bind(user_id)
        .bind(old)
        .bind(new)
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes the credential of `user_id`, if any.
pub(crate) async fn delete(pool: &PgPool, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM credentials WHERE user_id = $1").bind(user_id).execute(pool).await?;
    Ok(())
}
