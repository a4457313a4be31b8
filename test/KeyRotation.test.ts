/**
 * `npm run cli -- rotate-keys`, run as the operator runs it (a child process)
 * against a server's database, on both dialects: credentials move to the new
 * first key, still open, and stay unreadable; a missing old key changes nothing.
 * A sealed credential is bound to its provider: moved to another provider, or
 * a file's data key put in its place, it does not open. Values sealed before
 * that binding still open, and rotate-keys seals them again, bound. Files' data
 * keys are re-sealed a batch at a time: a run cut short leaves every file
 * readable, and the next one finishes.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Either, Exit, Layer } from "effect"
import * as Crypto from "node:crypto"
import { ProviderId } from "../src/Domain/Ids.js"
import { FilesRepo } from "../src/Files/FilesRepo.js"
import { isLegacySealed, SealContext } from "../src/Models/CredentialCipher.js"
import { rotateKeys } from "../src/Models/KeyRotation.js"
import { ProvidersRepo } from "../src/Models/ProvidersRepo.js"
import { call, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { uploadOne } from "./fixtures/Content.js"
import { dialects, pgClientFor, sqliteClientFor } from "./fixtures/Database.js"
import { capturedLogs } from "./fixtures/Logs.js"
import { runCli } from "./fixtures/Process.js"
import { fakeProvider } from "./fixtures/Providers.js"
import { cipherLayer, cipherWith, sealLegacy } from "./fixtures/Sealing.js"
import { inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

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
  readonly id: string
  readonly name: string
  readonly credentialCiphertext: string
  readonly credentialKeyId: string
}

const storedCredentials = Effect.flatMap(TestServer, ({ databaseUrl, dataDir }) =>
  Effect.provide(
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        sql<StoredCredential>`SELECT id, name, credential_ciphertext, credential_key_id FROM providers
                              WHERE credential_ciphertext IS NOT NULL ORDER BY name`
    ),
    databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
  )).pipe(Effect.orDie)

/** Opens a stored credential the way the server does, with `key` alone (under the id its row names). */
const open = (stored: StoredCredential, key: Buffer) =>
  Either.getOrThrow(
    cipherWith(`${stored.credentialKeyId}:${key.toString("base64")}`).openBytes(
      stored.credentialCiphertext,
      stored.credentialKeyId,
      SealContext.providerCredential(ProviderId.make(stored.id))
    )
  ).toString("utf8")

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

const oldKeys = `old:${oldKey.toString("base64")}`
const newKeys = `new:${newKey.toString("base64")}`
const bothKeys = `${newKeys},${oldKeys}`

/** A server of a test's own on `dialect` (so its counts are its own), sealing under the old key. */
const ownServer = (dialect: (typeof dialects)[number], logs?: ReturnType<typeof capturedLogs>) =>
  startTestServer(
    testServer({ dialect, env: { JWT_SECRET: jwtSecret, ENCRYPTION_KEYS: oldKeys } }).pipe(
      Layer.provide(logs?.layer ?? Layer.empty)
    )
  )

/** Another server on the test server's database and files, with `keys`. */
const sameDatabase = (keys: string) =>
  Effect.flatMap(TestServer, ({ dataDir, databaseUrl }) =>
    startTestServer(testServer({
      env: {
        JWT_SECRET: jwtSecret,
        ENCRYPTION_KEYS: keys,
        DATA_DIR: dataDir,
        ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl })
      }
    })))

const createProvider = (admin: TestUser, name: string, baseUrl: string, credential: string) =>
  Effect.map(
    call("POST", "/api/v1/providers", { auth: admin.accessToken, body: { name, kind: "openai", baseUrl, credential } }),
    (reply) => expectStatus(reply, 201).id as string
  )

const health = (admin: TestUser, providerId: string) =>
  call("GET", `/api/v1/providers/${providerId}/health`, { auth: admin.accessToken })

const credentialOf = (providerId: string) =>
  Effect.map(storedCredentials, (rows) => rows.find((row) => row.id === providerId)!)

const setCredential = (providerId: string, ciphertext: string, keyId: string) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`UPDATE providers SET credential_ciphertext = ${ciphertext}, credential_key_id = ${keyId}
        WHERE id = ${providerId}`)
  )

interface FileKeyRow {
  readonly id: string
  readonly storageKey: string
  readonly contentKeyCiphertext: string
  readonly contentKeyId: string
}

/** The files' sealed data keys, by id (the order rotation reads them in). */
const fileKeyRows = inServerDatabase(
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<FileKeyRow>`SELECT id, storage_key, content_key_ciphertext, content_key_id FROM files ORDER BY id`
  )
)

const fileKeyOf = (fileId: string) => Effect.map(fileKeyRows, (rows) => rows.find((row) => row.id === fileId)!)

const setFileKey = (fileId: string, ciphertext: string, keyId: string) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`UPDATE files SET content_key_ciphertext = ${ciphertext}, content_key_id = ${keyId} WHERE id = ${fileId}`)
  )

const downloaded = (user: TestUser, fileId: string) =>
  Effect.map(
    call("GET", `/api/v1/files/${fileId}/content`, { auth: user.accessToken }),
    (reply) => expectStatus(reply, 200)
  )

for (const dialect of dialects) {
  describe(`sealed values bound to their use, on ${dialect}`, () => {
    it.scopedLive(
      "a credential moved to another provider, or a file's data key put in its place, does not open",
      () =>
        Effect.gen(function*() {
          const logs = capturedLogs()
          const server = yield* ownServer(dialect, logs)
          yield* Effect.gen(function*() {
            const admin = yield* signUp()
            const fake = yield* fakeProvider("openai", [{ name: "m" }])
            const first = yield* createProvider(admin, "first", fake.url, fake.apiKey)
            const secondCredential = `sk-second-${Crypto.randomUUID()}`
            const second = yield* createProvider(admin, "second", fake.url, secondCredential)
            const file = yield* uploadOne(admin.accessToken, "key.txt", "A file whose data key is no credential.\n")
            expect(expectStatus(yield* health(admin, first), 200)).toMatchObject({ reachable: true })
            const [firstSealed, secondSealed] = [yield* credentialOf(first), yield* credentialOf(second)]
            const fileKey = yield* fileKeyOf(file.id)
            const asked = fake.requests.length
            const loggedBefore = logs.lines.length

            // The first provider's credential, under the same key, in the second's row.
            yield* setCredential(second, firstSealed.credentialCiphertext, firstSealed.credentialKeyId)
            expect(expectStatus(yield* health(admin, second), 500)).toMatchObject({ _tag: "InternalError" })
            // A file's data key, under the same key, as the second's credential.
            yield* setCredential(second, fileKey.contentKeyCiphertext, fileKey.contentKeyId)
            expect(expectStatus(yield* health(admin, second), 500)).toMatchObject({ _tag: "InternalError" })
            // Neither was sent anywhere.
            expect(fake.requests.length).toBe(asked)
            const unreadable = logs.lines.slice(loggedBefore).filter((line) =>
              line.cause.includes(`A stored credential sealed under key "old" does not open`)
            )
            expect(unreadable.length).toBeGreaterThanOrEqual(2)

            // Each in its own row, both open again.
            yield* setCredential(second, secondSealed.credentialCiphertext, secondSealed.credentialKeyId)
            expectStatus(yield* health(admin, second), 200)
            expect(fake.requests.length).toBe(asked + 1)
            expect(fake.requests.at(-1)?.headers.authorization).toBe(`Bearer ${secondCredential}`)
            expect(expectStatus(yield* health(admin, first), 200)).toMatchObject({ reachable: true })
          }).pipe(Effect.provideService(TestServer, server))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive(
      "values sealed before they were bound still open; rotate-keys seals them again, bound, and counts them",
      () =>
        Effect.gen(function*() {
          const server = yield* ownServer(dialect)
          yield* Effect.gen(function*() {
            const admin = yield* signUp()
            const fake = yield* fakeProvider("openai", [{ name: "m" }])
            const provider = yield* createProvider(admin, "legacy", fake.url, fake.apiKey)
            const content = `Sealed the old way ${Crypto.randomUUID()}.\n`
            const file = yield* uploadOne(admin.accessToken, "legacy.txt", content)
            const current = yield* fileKeyOf(file.id)
            const dataKey = Either.getOrThrow(
              cipherWith(oldKeys).openBytes(
                current.contentKeyCiphertext,
                current.contentKeyId,
                SealContext.fileDataKey(current.storageKey)
              )
            )
            // Both as an earlier version sealed them: the key id alone bound.
            yield* setCredential(provider, sealLegacy(Buffer.from(fake.apiKey), "old", oldKey), "old")
            yield* setFileKey(file.id, sealLegacy(dataKey, "old", oldKey), "old")
            expect(isLegacySealed((yield* credentialOf(provider)).credentialCiphertext)).toBe(true)

            // They open: the provider is sent its credential, the file comes whole.
            expect(expectStatus(yield* health(admin, provider), 200)).toMatchObject({ reachable: true })
            expect(fake.requests.at(-1)?.headers.authorization).toBe(`Bearer ${fake.apiKey}`)
            expect(yield* downloaded(admin, file.id)).toBe(content)

            // The same key stays first: rotate-keys only upgrades them.
            const upgraded = yield* rotate(oldKeys)
            expect(upgraded.code, upgraded.stderr).toBe(0)
            expect(upgraded.stdout).toContain(`Re-encrypted 1 credential(s) under key "old"; 0 already under it.`)
            expect(upgraded.stdout).toContain(`Re-sealed 1 file data key(s) under key "old"; 0 already under it`)
            expect(upgraded.stdout).toContain("Upgraded 1 credential(s) and 1 file data key(s)")
            const [credentialAfter, fileKeyAfter] = [yield* credentialOf(provider), yield* fileKeyOf(file.id)]
            expect([credentialAfter.credentialKeyId, fileKeyAfter.contentKeyId]).toEqual(["old", "old"])
            expect(isLegacySealed(credentialAfter.credentialCiphertext)).toBe(false)
            expect(isLegacySealed(fileKeyAfter.contentKeyCiphertext)).toBe(false)
            expect(open(credentialAfter, oldKey)).toBe(fake.apiKey)
            expect(expectStatus(yield* health(admin, provider), 200)).toMatchObject({ reachable: true })
            expect(fake.requests.at(-1)?.headers.authorization).toBe(`Bearer ${fake.apiKey}`)
            expect(yield* downloaded(admin, file.id)).toBe(content)

            const again = yield* rotate(oldKeys)
            expect(again.stdout).toContain(`Re-encrypted 0 credential(s) under key "old"; 1 already under it.`)
            expect(again.stdout).toContain(`Re-sealed 0 file data key(s) under key "old"; 1 already under it`)
            expect(again.stdout).toContain("Upgraded 0 credential(s) and 0 file data key(s)")
          }).pipe(Effect.provideService(TestServer, server))
        }),
      { timeout: 60_000 }
    )

    it.scopedLive("a credential an administrator changes while the rotation runs stays as they set it", () =>
      Effect.gen(function*() {
        const server = yield* ownServer(dialect)
        yield* Effect.gen(function*() {
          const admin = yield* signUp()
          const fake = yield* fakeProvider("openai", [{ name: "m" }])
          const changed = yield* createProvider(admin, "changed", fake.url, `sk-changed-${Crypto.randomUUID()}`)
          const kept = yield* createProvider(admin, "kept", fake.url, `sk-kept-${Crypto.randomUUID()}`)
          // What the administrator's change stores, between the rotation's read and its write.
          const meanwhile = yield* credentialOf(kept)
          const rotated = yield* inServerDatabase(
            rotateKeys().pipe(
              Effect.provide(Layer.mergeAll(
                Layer.effect(
                  ProvidersRepo,
                  Effect.gen(function*() {
                    const repo = yield* ProvidersRepo
                    const sql = yield* SqlClient.SqlClient
                    return ProvidersRepo.make({
                      ...repo,
                      // The change lands first, on the rotation's own connection (SQLite has one writer).
                      setCredential: (id, previous, ciphertext, keyId) =>
                        Effect.zipRight(
                          id === changed
                            ? Effect.orDie(
                              sql`UPDATE providers SET credential_ciphertext = ${meanwhile.credentialCiphertext},
                                    credential_key_id = ${meanwhile.credentialKeyId} WHERE id = ${changed}`
                            )
                            : Effect.void,
                          repo.setCredential(id, previous, ciphertext, keyId)
                        )
                    })
                  })
                ).pipe(Layer.provide(ProvidersRepo.Default)),
                FilesRepo.Default,
                cipherLayer(bothKeys)
              ))
            )
          )
          expect(rotated.credentials).toMatchObject({ reencrypted: 1 })
          expect(yield* credentialOf(changed)).toMatchObject({
            credentialCiphertext: meanwhile.credentialCiphertext,
            credentialKeyId: "old"
          })
          expect(yield* credentialOf(kept)).toMatchObject({ credentialKeyId: "new" })
        }).pipe(Effect.provideService(TestServer, server))
      }))

    it.scopedLive(
      "data keys are re-sealed a batch at a time: cut short, every file still opens; the next run finishes",
      () =>
        Effect.gen(function*() {
          const server = yield* ownServer(dialect)
          yield* Effect.gen(function*() {
            const user = yield* signUp()
            const contents = Array.from({ length: 7 }, (_, index) => `File ${index} of the batches.\n`)
            const files = yield* Effect.forEach(
              contents,
              (content, index) => uploadOne(user.accessToken, `batch-${index}.txt`, content)
            )
            expect((yield* fileKeyRows).map((row) => row.id)).toEqual(files.map((file) => file.id))

            /** Rotation as the command runs it, 3 rows to a batch, with these files' repository. */
            const rotation = (repository: Layer.Layer<FilesRepo, never, SqlClient.SqlClient>) =>
              inServerDatabase(Effect.exit(
                rotateKeys({ fileKeyBatch: 3 }).pipe(
                  Effect.provide(Layer.mergeAll(ProvidersRepo.Default, repository, cipherLayer(bothKeys)))
                )
              ))
            // The fifth write, the second batch's second, fails: that batch is undone, the first stays.
            let writes = 0
            const cut = yield* rotation(
              Layer.effect(
                FilesRepo,
                Effect.map(FilesRepo, (repo) =>
                  FilesRepo.make({
                    ...repo,
                    setContentKey: (id, previous, sealed) =>
                      ++writes === 5 ? Effect.dieMessage("cut short") : repo.setContentKey(id, previous, sealed)
                  }))
              ).pipe(Layer.provide(FilesRepo.Default))
            )
            expect(Exit.isFailure(cut)).toBe(true)
            expect((yield* fileKeyRows).map((row) => row.contentKeyId)).toEqual([
              ...Array(3).fill("new"),
              ...Array(4).fill("old")
            ])
            const bothListed = yield* sameDatabase(bothKeys)
            for (const [index, file] of files.entries()) {
              expect(yield* Effect.provideService(downloaded(user, file.id), TestServer, bothListed)).toBe(
                contents[index]
              )
            }

            const finished = yield* rotation(FilesRepo.Default)
            expect(finished).toEqual(Exit.succeed({
              keyId: "new",
              credentials: { reencrypted: 0, alreadyCurrent: 0, upgraded: 0 },
              fileKeys: { resealed: 4, alreadyCurrent: 3, upgraded: 0 }
            }))
            expect((yield* fileKeyRows).map((row) => row.contentKeyId)).toEqual(Array(7).fill("new"))
            const newAlone = yield* sameDatabase(newKeys)
            for (const [index, file] of files.entries()) {
              expect(yield* Effect.provideService(downloaded(user, file.id), TestServer, newAlone)).toBe(
                contents[index]
              )
            }
          }).pipe(Effect.provideService(TestServer, server))
        }),
      { timeout: 60_000 }
    )
  })
}
