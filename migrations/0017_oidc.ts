/**
 * Single sign-on with OpenID Connect.
 *
 * - `oidc_identities`: who a user is at an identity provider (its issuer and the `sub` it gives
 *   them), unique per provider, so a later sign-in finds the account whatever its email became.
 * - `oidc_login_attempts`: a sign-in under way, from the redirect to the provider until its
 *   callback (any instance may take either): the digest of its `state`, the nonce, the PKCE code
 *   verifier (sealed like a provider credential), the front-end URL to return to, the digest of the
 *   browser's binding cookie, and its expiry. Consumed once.
 * - `oidc_login_codes`: the short-lived single-use code a front end exchanges for tokens, by digest.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
  readonly now: string
}

const statements = (t: Types) => [
  `CREATE TABLE oidc_identities (
    id ${t.id} PRIMARY KEY,
    user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issuer text NOT NULL,
    subject text NOT NULL,
    email text,
    created_at ${t.timestamp} NOT NULL DEFAULT ${t.now},
    last_login_at ${t.timestamp},
    UNIQUE (issuer, subject)
  )`,
  `CREATE INDEX oidc_identities_user_idx ON oidc_identities (user_id)`,
  `CREATE TABLE oidc_login_attempts (
    state_hash text PRIMARY KEY,
    nonce text NOT NULL,
    code_verifier text NOT NULL,
    code_verifier_key_id text NOT NULL,
    redirect text NOT NULL,
    binding_hash text NOT NULL,
    expires_at ${t.timestamp} NOT NULL,
    created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}
  )`,
  `CREATE INDEX oidc_login_attempts_expiry_idx ON oidc_login_attempts (expires_at)`,
  `CREATE TABLE oidc_login_codes (
    code_hash text PRIMARY KEY,
    user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at ${t.timestamp} NOT NULL,
    created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}
  )`,
  `CREATE INDEX oidc_login_codes_expiry_idx ON oidc_login_codes (expires_at)`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz", now: "now()" }),
    orElse: (): Types => ({ id: "text", timestamp: "text", now: "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))" })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})
