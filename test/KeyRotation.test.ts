/**
 * `npm run cli -- rotate-keys`, run as the operator runs it (a child process)
 * against a server's database, on both dialects: credentials move to the new
 * first key, still open, and stay unreadable; a missing old key changes nothing.
 */
import { SqlClient } from "@effect/sql"
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Crypto from "node:crypto"
import { call, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects, pgClientFor, sqliteClientFor } from "./fixtures/Database.js"
import { runCli } from "./fixtures/Process.js"
import { fakeProvider } from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"

const oldKey = Crypto.randomBytes(32)
const newKey = Crypto.randomBytes(32)
const jwtSecret = "rotation-test-jwt-secret-0123456789abcdef"

class Admin extends Context.Tag("test/KeyRotation/Admin")<Admin, TestUser>() {}

const serverWithAdmin = (dialect: (typeof dialects)[number]) =>
  Layer.effect(Admin, signUp()).pipe(
    Layer.provideMerge(testServer({
      dialect,
      env: { JWT_SECRET: jwtSecret, ENCRYPTION_KEYS: `old:${oldKey.toString("base64")}` }
    }))
  )

interface StoredCredential {
  readonly name: string
  readonly credentialCiphertext: string
  readonly credentialKeyId: string
}

const storedCredentials = Effect.flatMap(TestServer, ({ databaseUrl, dataDir }) =>
  Effect.provide(
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        sql<StoredCredential>`SELECT name, credential_ciphertext, credential_key_id FROM providers
                              WHERE credential_ciphertext IS NOT NULL ORDER BY name`
    ),
    databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
  )).pipe(Effect.orDie)

/** Opens a stored credential the way the server does (AES-256-GCM, key id as additional data). */
const open = (stored: StoredCredential, key: Buffer) => {
  const bytes = Buffer.from(stored.credentialCiphertext, "base64")
  const decipher = Crypto.createDecipheriv("aes-256-gcm", key, bytes.subarray(0, 12))
  decipher.setAAD(Buffer.from(stored.credentialKeyId))
  decipher.setAuthTag(bytes.subarray(12, 28))
  return Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString("utf8")
}

const rotate = (keys: string) => runCli(["rotate-keys"], { JWT_SECRET: jwtSecret, ENCRYPTION_KEYS: keys })

for (const dialect of dialects) {
  layer(serverWithAdmin(dialect), { excludeTestServices: true })(`key rotation on ${dialect}`, (it) => {
    it.scoped("re-encrypts every credential under the first key, all or nothing", () =>
      Effect.gen(function*() {
        const admin = yield* Admin
        const fake = yield* fakeProvider("openai", [{ name: "m" }])
        const secrets = [`sk-first-${Crypto.randomUUID()}`, `sk-second-${Crypto.randomUUID()}`]
        for (const [index, credential] of secrets.entries()) {
          const reply = yield* call("POST", "/api/v1/providers", {
            auth: admin.accessToken,
            body: { name: `rotated-${index}`, kind: "openai", baseUrl: fake.url, credential }
          })
          expect(reply.status, JSON.stringify(reply.body)).toBe(201)
        }
        const before = yield* storedCredentials
        expect(before.map((row) => row.credentialKeyId)).toEqual(["old", "old"])
        expect(before.map((row) => open(row, oldKey))).toEqual(secrets)

        // Without the old key nothing can be opened, and nothing changes.
        const refused = yield* rotate(`new:${newKey.toString("base64")}`)
        expect(refused.code).not.toBe(0)
        expect(refused.stderr).toContain("old")
        expect(refused.stderr + refused.stdout).not.toContain("sk-")
        expect(yield* storedCredentials).toEqual(before)

        const keys = `new:${newKey.toString("base64")},old:${oldKey.toString("base64")}`
        const rotated = yield* rotate(keys)
        expect(rotated.code, rotated.stderr).toBe(0)
        expect(rotated.stdout).toContain("Re-encrypted 2 credential(s) under key \"new\"")
        const after = yield* storedCredentials
        expect(after.map((row) => row.credentialKeyId)).toEqual(["new", "new"])
        expect(after.map((row) => open(row, newKey))).toEqual(secrets)
        for (const row of after) expect(row.credentialCiphertext).not.toContain("sk-")

        const again = yield* rotate(keys)
        expect(again.stdout).toContain("Re-encrypted 0 credential(s) under key \"new\"; 2 already under it.")
      }))
  })
}
