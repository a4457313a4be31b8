/**
 * Files' contents encrypted at rest (`FILES_ENCRYPTION`, `src/Files/ContentCipher.ts`), over real
 * HTTP on both dialects, with contents on disk and in a loopback S3-compatible store: what is stored
 * holds no plaintext and downloads give the upload back at every segment boundary; analyses and
 * attachments read the text; a content changed, cut or moved onto another file is never given out
 * as whole (the download is cut, logged, and the server goes on); `FILES_ENCRYPTION=off` stores
 * contents as they are and both kinds stay readable either way; `rotate-keys` re-seals the data
 * keys (the contents then open with the new key alone) and `encrypt-files` encrypts the contents
 * stored before, once. The segment format itself is checked on its own first.
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Chunk, ConfigProvider, Context, Effect, Either, Layer, Stream } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { AppConfig } from "../src/Config.js"
import { newDataKey, openContent, sealContent, segmentSize } from "../src/Files/ContentCipher.js"
import { encryptStoredContents } from "../src/Files/EncryptContents.js"
import { FilesRepo } from "../src/Files/FilesRepo.js"
import { FileStorage } from "../src/Files/Storage.js"
import { CredentialCipher } from "../src/Models/CredentialCipher.js"
import { Secrets } from "../src/Secrets.js"
import { call, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { analysisSettled, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { capturedLogs, type LogLine } from "./fixtures/Logs.js"
import { runCli } from "./fixtures/Process.js"
import { chatPath, type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { type FakeS3, fakeS3 } from "./fixtures/S3.js"
import { backgroundWorkEnv, inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const oldKey = Crypto.randomBytes(32)
const newKey = Crypto.randomBytes(32)
const oldKeys = `old:${oldKey.toString("base64")}`
const newKeys = `new:${newKey.toString("base64")}`
const jwtSecret = "file-encryption-test-jwt-secret-0123456789"
const prefix = "enc/"
const storages = ["local", "s3"] as const
type Storage = (typeof storages)[number]

/** The bytes a content of `size` bytes takes encrypted: header, content, a tag per segment. */
const encryptedSize = (size: number) => 9 + size + 16 * Math.max(1, Math.ceil(size / segmentSize))

const sha256 = (content: Uint8Array | string) => Crypto.createHash("sha256").update(content).digest("hex")

/** Text of exactly `size` bytes, `marker` recurring in it (every line names it). */
const textOf = (size: number, marker: string) => {
  const line = `Line of the ${marker} document, which nobody may read on the disk.\n`
  return Buffer.from(line.repeat(Math.ceil(size / line.length) + 1)).subarray(0, size)
}

// --- the segment format, on its own

const collect = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)))

/** `bytes` as a stream of chunks of uneven sizes. */
const chunked = (bytes: Uint8Array) => {
  const chunks: Array<Uint8Array> = []
  for (let at = 0, step = 1; at < bytes.length; at += step, step = (step * 7 + 3) % 50_000 + 1) {
    chunks.push(bytes.subarray(at, at + step))
  }
  return Stream.fromIterable(chunks)
}

describe("the segment format", () => {
  it.effect("a content opens as it was sealed, at every segment boundary, whatever its chunks", () =>
    Effect.gen(function*() {
      for (const size of [0, 1, segmentSize - 1, segmentSize, segmentSize + 1, 3 * 1024 * 1024 + 5]) {
        const content = Crypto.randomBytes(size)
        const key = newDataKey()
        const sealed = yield* collect(sealContent(chunked(content), key, "storage-a"))
        expect(sealed.length, `size ${size}`).toBe(encryptedSize(size))
        const opened = yield* collect(openContent(chunked(sealed), key, "storage-a", "k"))
        expect(opened.equals(content), `size ${size}`).toBe(true)
      }
    }))

  it.effect("a segment changed, dropped or moved, a content cut or under another key: it does not open", () =>
    Effect.gen(function*() {
      const content = Crypto.randomBytes(3 * segmentSize + 100)
      const key = newDataKey()
      const sealed = yield* collect(sealContent(Stream.make(content), key, "storage-a"))
      const sealedSegment = segmentSize + 16
      const segment = (i: number) => sealed.subarray(9 + i * sealedSegment, 9 + (i + 1) * sealedSegment)
      const header = sealed.subarray(0, 9)
      const flipped = Buffer.from(sealed)
      flipped[9 + sealedSegment + 10]! ^= 1
      const attempts = {
        flipped,
        "the last segment dropped": sealed.subarray(0, 9 + 3 * sealedSegment),
        "the last byte cut": sealed.subarray(0, sealed.length - 1),
        "two segments swapped": Buffer.concat([header, segment(1), segment(0), sealed.subarray(9 + 2 * sealedSegment)]),
        "only the header": header,
        "another version": Buffer.concat([Buffer.from([2]), sealed.subarray(1)])
      }
      for (const [what, bytes] of Object.entries(attempts)) {
        const opened = yield* Effect.either(collect(openContent(Stream.make(bytes), key, "storage-a", "k")))
        expect(Either.isLeft(opened), what).toBe(true)
        if (Either.isLeft(opened)) expect(opened.left._tag).toBe("ContentUnreadable")
      }
      const elsewhere = yield* Effect.either(collect(openContent(Stream.make(sealed), key, "storage-b", "k")))
      expect(Either.isLeft(elsewhere)).toBe(true)
      const otherKey = yield* Effect.either(collect(openContent(Stream.make(sealed), newDataKey(), "storage-a", "k")))
      expect(Either.isLeft(otherKey)).toBe(true)
    }))

  it.effect("nothing of a segment is given out before it is authenticated", () =>
    Effect.gen(function*() {
      const content = Crypto.randomBytes(2 * segmentSize + 10)
      const key = newDataKey()
      const sealed = Buffer.from(yield* collect(sealContent(Stream.make(content), key, "storage-a")))
      sealed[9 + (segmentSize + 16) + 5]! ^= 1
      const given: Array<Uint8Array> = []
      const opened = yield* Effect.either(
        Stream.runForEach(openContent(chunked(sealed), key, "storage-a", "k"), (chunk) =>
          Effect.sync(() => {
            given.push(chunk)
          }))
      )
      expect(Either.isLeft(opened)).toBe(true)
      expect(Buffer.concat(given).equals(content.subarray(0, segmentSize))).toBe(true)
    }))
})

// --- through the server

interface Cast {
  readonly storage: Storage
  readonly store: FakeS3
  readonly logs: ReadonlyArray<LogLine>
  readonly user: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
  /** The configuration of every server of this storage and these keys (more servers share its data and database). */
  readonly env: (extra?: Record<string, string>) => Record<string, string>
}

class TheCast extends Context.Tag("test/FileEncryption/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number], storage: Storage) =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const store = yield* fakeS3()
    const logs = capturedLogs()
    const env = (extra: Record<string, string> = {}) => ({
      ...(storage === "s3" ? store.env({ S3_PREFIX: prefix }) : {}),
      ...backgroundWorkEnv,
      JWT_SECRET: jwtSecret,
      ENCRYPTION_KEYS: oldKeys,
      FILES_MAX_SIZE: "8mb",
      ...extra
    })
    const cast = Layer.scoped(
      TheCast,
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const openai = yield* fakeProvider("openai", [{ name: "gpt-sealed" }])
        const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
        return { storage, store, logs: logs.lines, user, openai, modelId: models["gpt-sealed"]!, env }
      })
    )
    return cast.pipe(Layer.provideMerge(testServer({ dialect, env: env() }).pipe(Layer.provide(logs.layer))))
  }))

interface FileRow {
  readonly storageKey: string
  readonly sizeBytes: number
  readonly sha256: string
  readonly contentKeyCiphertext: string | null
  readonly contentKeyId: string | null
}

const rowOf = (id: string) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<FileRow>`SELECT storage_key, size_bytes, sha256, content_key_ciphertext, content_key_id
                 FROM files WHERE id = ${id}`)
  ).pipe(Effect.map((rows) =>
    rows[0]!
  ))

const setRow = (
  id: string,
  change: { readonly contentKeyCiphertext: string | null; readonly contentKeyId: string | null }
) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql`UPDATE files SET content_key_ciphertext = ${change.contentKeyCiphertext},
          content_key_id = ${change.contentKeyId} WHERE id = ${id}`)
  )

/** The bytes stored under a storage key (on disk or in the bucket); `undefined` when there are none. */
const storedBytes = (storageKey: string) =>
  Effect.gen(function*() {
    const { storage, store } = yield* TheCast
    const { dataDir } = yield* TestServer
    if (storage === "s3") return store.objects.get(prefix + storageKey)
    const file = Path.join(dataDir, "files", storageKey.slice(0, 2), storageKey)
    return Fs.existsSync(file) ? Fs.readFileSync(file) : undefined
  })

/** Replaces the bytes stored under a storage key, behind the server's back. */
const putStored = (storageKey: string, bytes: Uint8Array) =>
  Effect.gen(function*() {
    const { storage, store } = yield* TheCast
    const { dataDir } = yield* TestServer
    if (storage === "s3") store.objects.set(prefix + storageKey, Buffer.from(bytes))
    else Fs.writeFileSync(Path.join(dataDir, "files", storageKey.slice(0, 2), storageKey), bytes)
  })

/**
 * A download read to its end: `complete` when the body arrived whole, `cut` when the connection
 * broke (before the headers came: `status` 0), `stalled` when nothing more came for 3 s (a body
 * short of its length on a connection left open).
 */
const download = (auth: string, id: string) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    Effect.promise(async () => {
      const controller = new AbortController()
      const response = await fetch(`${baseUrl}/api/v1/files/${id}/content`, {
        headers: { authorization: `Bearer ${auth}`, "accept-encoding": "identity" },
        signal: controller.signal
      }).catch(() => undefined)
      if (response === undefined) {
        return { status: 0, headers: {} as Record<string, string>, bytes: Buffer.alloc(0), outcome: "cut" as const }
      }
      const received: Array<Uint8Array> = []
      let outcome: "complete" | "cut" | "stalled" = "complete"
      let timer = setTimeout(() => controller.abort(), 3_000)
      try {
        for await (const chunk of response.body ?? []) {
          received.push(chunk)
          clearTimeout(timer)
          timer = setTimeout(() => controller.abort(), 3_000)
        }
      } catch {
        outcome = controller.signal.aborted ? "stalled" : "cut"
      } finally {
        clearTimeout(timer)
      }
      return {
        status: response.status,
        headers: Object.fromEntries(response.headers),
        bytes: Buffer.concat(received),
        outcome
      }
    }))

/** Downloads `id` and expects `content` back, whole. */
const expectDownload = (auth: string, id: string, content: Uint8Array) =>
  Effect.map(download(auth, id), (got) => {
    expect(got.status).toBe(200)
    expect(got.outcome).toBe("complete")
    expect(got.bytes.length).toBe(content.length)
    expect(got.bytes.equals(content)).toBe(true)
    return got
  })

/**
 * Downloads `id`, which must never come whole: the connection is cut after what was authenticated,
 * a prefix of `content` (before the headers when that is nothing).
 */
const expectCut = (auth: string, id: string, content: Uint8Array) =>
  Effect.map(download(auth, id), (got) => {
    expect([0, 200]).toContain(got.status)
    expect(got.outcome).toBe("cut")
    expect(got.bytes.length).toBeLessThan(content.length)
    expect(got.bytes.equals(content.subarray(0, got.bytes.length))).toBe(true)
    return got
  })

/** How many files there are, and how many of their contents are encrypted. */
const storedCounts = inServerDatabase(
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ stored: number | string; encrypted: number | string }>`
    SELECT count(*) AS stored, count(content_key_id) AS encrypted FROM files`)
).pipe(
  Effect.map((rows) => ({ stored: Number(rows[0]!.stored), encrypted: Number(rows[0]!.encrypted) }))
)

const onServer = (server: Context.Tag.Service<TestServer>) => Effect.provideService(TestServer, server)

/** Another server on the same database and stored contents, with `extra` settings. */
const sibling = (extra: Record<string, string>) =>
  Effect.gen(function*() {
    const { env } = yield* TheCast
    const { dataDir, databaseUrl } = yield* TestServer
    return yield* startTestServer(testServer({
      env: env({ DATA_DIR: dataDir, ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }), ...extra })
    }))
  })

const cli = (args: ReadonlyArray<string>, keys: string) =>
  Effect.flatMap(TheCast, ({ env }) => runCli(args, { ...env({ ENCRYPTION_KEYS: keys }), LOG_LEVEL: "warn" }))

for (const dialect of dialects) {
  for (const storage of storages) {
    layer(withCast(dialect, storage), { excludeTestServices: true })(
      `files encrypted at rest on ${dialect}, ${storage}`,
      (it) => {
        it.scoped("stored bytes hold no plaintext; downloads give every size back, with the same view and headers", () =>
          Effect.gen(function*() {
            const { store, user } = yield* TheCast
            for (const size of [1, segmentSize - 1, segmentSize, segmentSize + 1, 3 * 1024 * 1024 + 5]) {
              const marker = `marker-${Crypto.randomUUID()}`
              const content = size === 1 ? Buffer.from("Q") : textOf(size, marker)
              const puts = store.requests.filter((request) => request.method === "PUT").length
              const view = yield* uploadOne(user.accessToken, `sized-${size}.txt`, content)
              expect(view).toMatchObject({ contentType: "text/plain", sizeBytes: size, sha256: sha256(content) })
              const row = yield* rowOf(view.id)
              expect(row).toMatchObject({ sizeBytes: size, sha256: sha256(content), contentKeyId: "old" })
              expect(row.contentKeyCiphertext).toEqual(expect.any(String))
              const stored = (yield* storedBytes(row.storageKey))!
              expect(stored.length, `size ${size}`).toBe(encryptedSize(size))
              expect(stored.includes(Buffer.from(marker))).toBe(false)
              if (size >= 64) expect(stored.includes(content.subarray(0, 64))).toBe(false)
              else expect(stored.subarray(9, 9 + size).equals(content)).toBe(false)
              if (storage === "s3") {
                // The store checked the PUT's length and signed hash against the bytes it received.
                const put = store.requests.filter((request) => request.method === "PUT").slice(puts)
                expect(put).toEqual([expect.objectContaining({ status: 200, signed: true })])
              }
              const got = yield* expectDownload(user.accessToken, view.id, content)
              expect(got.headers).toMatchObject({
                etag: `"${sha256(content)}"`,
                "content-length": String(size),
                "content-type": "text/plain; charset=utf-8"
              })
            }
          }))

        it.scoped("a text file's analysis and a chat's attachment read the encrypted text", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: [`{"summary": "Sealed notes.", "keyPoints": [], "topics": [], "language": "en"}`] }
            const content = `Notes kept sealed ${Crypto.randomUUID()}.\n`
            const file = yield* uploadOne(user.accessToken, "notes.txt", content)
            expect((yield* rowOf(file.id)).contentKeyId).toBe("old")
            const queued = expectStatus(
              yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
              202
            )
            expect(yield* analysisSettled(user.accessToken, file.id, queued.id, 200)).toMatchObject({
              status: "complete",
              extractedText: content
            })
            const conversation = expectStatus(
              yield* call("POST", "/api/v1/conversations", {
                auth: user.accessToken,
                body: { title: "Sealed attachment", modelId }
              }),
              201
            )
            openai.chat = { text: ["Read."] }
            expectStatus(
              yield* call("POST", `/api/v1/conversations/${conversation.id}/chat`, {
                auth: user.accessToken,
                body: { content: "What does it say?", fileIds: [file.id] }
              }),
              200
            )
            const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
            expect(JSON.stringify(sent.body.messages)).toContain(content.trim())
          }))

        it.scoped("a content changed, cut or moved onto another file is never given out whole; logged; the server goes on", () =>
          Effect.gen(function*() {
            const { logs, user } = yield* TheCast
            const marker = `first-${Crypto.randomUUID()}`
            const first = textOf(4 * segmentSize + 123, marker)
            const second = textOf(4 * segmentSize + 123, `second-${Crypto.randomUUID()}`)
            const a = yield* uploadOne(user.accessToken, "first.txt", first)
            const b = yield* uploadOne(user.accessToken, "second.txt", second)
            const rowA = yield* rowOf(a.id)
            const rowB = yield* rowOf(b.id)
            const storedA = Buffer.from((yield* storedBytes(rowA.storageKey))!)
            const storedB = Buffer.from((yield* storedBytes(rowB.storageKey))!)
            const sealedSegment = segmentSize + 16
            const loggedBefore = logs.length

            // One byte of the third segment: the first two come, then the connection is cut.
            const flipped = Buffer.from(storedA)
            flipped[9 + 2 * sealedSegment + 100]! ^= 0x20
            yield* putStored(rowA.storageKey, flipped)
            const cut = yield* expectCut(user.accessToken, a.id, first)
            expect(cut.bytes.length).toBeLessThanOrEqual(2 * segmentSize)

            // One byte of the first: nothing of it comes.
            const early = Buffer.from(storedA)
            early[9 + 5]! ^= 0x01
            yield* putStored(rowA.storageKey, early)
            expect((yield* expectCut(user.accessToken, a.id, first)).bytes.length).toBe(0)

            // The last segment cut short, or dropped whole.
            yield* putStored(rowA.storageKey, storedA.subarray(0, storedA.length - 7))
            yield* expectCut(user.accessToken, a.id, first)
            yield* putStored(rowA.storageKey, storedA.subarray(0, 9 + 4 * sealedSegment))
            yield* expectCut(user.accessToken, a.id, first)

            // A's content and its data key moved onto B: B's storage key is bound in, it does not open.
            yield* putStored(rowB.storageKey, storedA)
            yield* setRow(b.id, rowA)
            expect((yield* expectCut(user.accessToken, b.id, second)).bytes.length).toBe(0)
            // A's content alone under B's key: B's data key does not open it.
            yield* setRow(b.id, rowB)
            expect((yield* expectCut(user.accessToken, b.id, second)).bytes.length).toBe(0)

            const failures = logs.slice(loggedBefore).filter((line) =>
              line.level === "ERROR" && String(line.message).startsWith("A stored file's content cannot be opened")
            )
            expect(failures.length).toBeGreaterThanOrEqual(6)
            expect(failures.some((line) => String(line.message).includes("does not authenticate"))).toBe(true)
            expect(failures.every((line) => line.annotations.keyId === "old")).toBe(true)
            const said = JSON.stringify(logs)
            expect(said).not.toContain(oldKey.toString("base64"))
            expect(said).not.toContain(marker)

            // Put back, both open again; the server went on all along.
            yield* putStored(rowA.storageKey, storedA)
            yield* putStored(rowB.storageKey, storedB)
            yield* expectDownload(user.accessToken, a.id, first)
            yield* expectDownload(user.accessToken, b.id, second)
            expect((yield* call("GET", "/health/live")).status).toBe(200)
          }))

        it.scoped("a data key moved onto another file, or a credential put in its place, does not open: cut, logged", () =>
          Effect.gen(function*() {
            const { logs, user } = yield* TheCast
            const first = textOf(segmentSize + 50, `key-first-${Crypto.randomUUID()}`)
            const second = textOf(segmentSize + 50, `key-second-${Crypto.randomUUID()}`)
            const a = yield* uploadOne(user.accessToken, "key-first.txt", first)
            const b = yield* uploadOne(user.accessToken, "key-second.txt", second)
            const rowA = yield* rowOf(a.id)
            const rowB = yield* rowOf(b.id)
            const [credential] = yield* inServerDatabase(
              Effect.flatMap(
                SqlClient.SqlClient,
                (sql) =>
                  sql<{ readonly credentialCiphertext: string; readonly credentialKeyId: string }>`
                  SELECT credential_ciphertext, credential_key_id FROM providers
                  WHERE credential_ciphertext IS NOT NULL AND credential_key_id = 'old'`
              )
            )
            const loggedBefore = logs.length

            // A's data key in B's row, B's content left in place: it is sealed for A's storage key.
            yield* setRow(b.id, rowA)
            expect((yield* expectCut(user.accessToken, b.id, second)).bytes.length).toBe(0)
            // A provider's credential, under the same key, as B's data key.
            yield* setRow(b.id, { contentKeyCiphertext: credential!.credentialCiphertext, contentKeyId: "old" })
            expect((yield* expectCut(user.accessToken, b.id, second)).bytes.length).toBe(0)

            const failures = logs.slice(loggedBefore).filter((line) =>
              line.level === "ERROR" && String(line.message).startsWith("A stored file's content cannot be opened")
            )
            expect(failures.length).toBeGreaterThanOrEqual(2)
            for (const line of failures) {
              expect(line.message).toBe(
                `A stored file's content cannot be opened: its data key does not open under key "old"`
              )
            }

            yield* setRow(b.id, rowB)
            yield* expectDownload(user.accessToken, b.id, second)
            yield* expectDownload(user.accessToken, a.id, first)
          }))

        it.scoped("FILES_ENCRYPTION=off stores contents as they are and reads encrypted ones; turned on, both still read", () =>
          Effect.gen(function*() {
            const { user } = yield* TheCast
            const off = yield* sibling({ FILES_ENCRYPTION: "off" })
            const plain = textOf(segmentSize + 10, `plain-${Crypto.randomUUID()}`)
            const kept = yield* onServer(off)(uploadOne(user.accessToken, "plain.txt", plain))
            const row = yield* rowOf(kept.id)
            expect(row).toMatchObject({ contentKeyCiphertext: null, contentKeyId: null })
            expect((yield* storedBytes(row.storageKey))!.equals(plain)).toBe(true)
            // Stored before, read with encryption on.
            yield* expectDownload(user.accessToken, kept.id, plain)

            const sealed = textOf(segmentSize + 10, `sealed-${Crypto.randomUUID()}`)
            const encrypted = yield* uploadOne(user.accessToken, "sealed.txt", sealed)
            expect((yield* rowOf(encrypted.id)).contentKeyId).toBe("old")
            yield* onServer(off)(expectDownload(user.accessToken, encrypted.id, sealed))
            yield* onServer(off)(expectDownload(user.accessToken, kept.id, plain))
          }))

        it.scoped("encrypt-files encrypts the contents stored as they are, once; a second run changes nothing", () =>
          Effect.gen(function*() {
            const { user } = yield* TheCast
            const off = yield* sibling({ FILES_ENCRYPTION: "off" })
            const contents = [
              textOf(100, `small-${Crypto.randomUUID()}`),
              textOf(2 * segmentSize + 5, `large-${Crypto.randomUUID()}`)
            ]
            const plain = yield* Effect.forEach(
              contents,
              (content, index) => onServer(off)(uploadOne(user.accessToken, `before-${index}.txt`, content))
            )
            const before = yield* Effect.forEach(plain, (file) => rowOf(file.id))
            // Earlier tests of this server left some of each kind.
            const { encrypted, stored } = yield* storedCounts
            expect(stored - encrypted).toBeGreaterThanOrEqual(2)

            const first = yield* cli(["encrypt-files"], oldKeys)
            expect(first.code, first.stderr).toBe(0)
            expect(first.stdout).toContain(
              `Encrypted ${stored - encrypted} file content(s) under key "old"; ${encrypted} already encrypted; ` +
                "0 deleted meanwhile; 0 could not be encrypted."
            )
            expect(yield* storedCounts).toEqual({ stored, encrypted: stored })
            for (const [index, file] of plain.entries()) {
              const row = yield* rowOf(file.id)
              expect(row.storageKey).not.toBe(before[index]!.storageKey)
              expect(row).toMatchObject({
                contentKeyId: "old",
                sizeBytes: contents[index]!.length,
                sha256: sha256(contents[index]!)
              })
              expect(yield* storedBytes(before[index]!.storageKey)).toBeUndefined()
              const stored = (yield* storedBytes(row.storageKey))!
              expect(stored.length).toBe(encryptedSize(contents[index]!.length))
              expect(stored.includes(contents[index]!.subarray(0, 40))).toBe(false)
              const got = yield* expectDownload(user.accessToken, file.id, contents[index]!)
              expect(got.headers.etag).toBe(`"${sha256(contents[index]!)}"`)
              yield* onServer(off)(expectDownload(user.accessToken, file.id, contents[index]!))
            }

            const after = yield* Effect.forEach(plain, (file) => rowOf(file.id))
            const second = yield* cli(["encrypt-files"], oldKeys)
            expect(second.code, second.stderr).toBe(0)
            expect(second.stdout).toContain(`Encrypted 0 file content(s) under key "old"; ${stored} already encrypted`)
            expect(yield* Effect.forEach(plain, (file) => rowOf(file.id))).toEqual(after)
          }))

        it.scoped("encrypt-files: a file deleted while its content is written again keeps nothing of it", () =>
          Effect.gen(function*() {
            const { env, user } = yield* TheCast
            const server = yield* TestServer
            const off = yield* sibling({ FILES_ENCRYPTION: "off" })
            const doomed = yield* onServer(off)(uploadOne(user.accessToken, "doomed.txt", "Deleted midway.\n"))
            const row = yield* rowOf(doomed.id)
            // The command's own services on the server's database and storage; once this content is
            // written again, the file is deleted through the API, before the row is moved onto it.
            let rewritten: string | undefined
            const deletingMidway = Layer.effect(
              FileStorage,
              Effect.map(FileStorage, (storage) =>
                FileStorage.make({
                  ...storage,
                  writeEncrypted: (storageKey) =>
                    Effect.tap(storage.writeEncrypted(storageKey), (written) =>
                      storageKey !== row.storageKey ? Effect.void : Effect.gen(function*() {
                        rewritten = written.storageKey
                        const deleted = yield* call("DELETE", `/api/v1/files/${doomed.id}`, { auth: user.accessToken })
                        expect(deleted.status).toBe(204)
                      }).pipe(Effect.provideService(TestServer, server)))
                }))
            ).pipe(Layer.provide(FileStorage.Default))
            const configured = Layer.mergeAll(AppConfig.Default, NodeContext.layer).pipe(
              Layer.provide(Layer.setConfigProvider(
                ConfigProvider.fromMap(
                  new Map(Object.entries({ ...env(), NODE_ENV: "test", DATA_DIR: server.dataDir }))
                )
              ))
            )
            const report = yield* inServerDatabase(encryptStoredContents.pipe(
              Effect.provide(
                Layer.mergeAll(FilesRepo.Default, deletingMidway).pipe(
                  Layer.provideMerge(CredentialCipher.Default),
                  Layer.provide(Secrets.Default),
                  Layer.provide(configured)
                )
              )
            ))
            expect(report).toMatchObject({ encrypted: 0, skipped: 1, failed: 0 })
            expect(rewritten).toEqual(expect.any(String))
            expect(yield* storedBytes(rewritten!)).toBeUndefined()
            expect(yield* storedBytes(row.storageKey)).toBeUndefined()
          }))

        it.scoped("rotate-keys re-seals the data keys, contents untouched: they open with the new key alone", () =>
          Effect.gen(function*() {
            const { logs, user } = yield* TheCast
            const content = textOf(segmentSize + 77, `rotated-${Crypto.randomUUID()}`)
            const file = yield* uploadOne(user.accessToken, "rotated.txt", content)
            const before = yield* rowOf(file.id)
            const storedBefore = Buffer.from((yield* storedBytes(before.storageKey))!)
            const total = (yield* storedCounts).encrypted

            if (storage === "local") {
              // Without the old key listed nothing opens, and nothing changes.
              const refused = yield* cli(["rotate-keys"], newKeys)
              expect(refused.code).not.toBe(0)
              expect(refused.stderr).toContain(`key "old", absent from ENCRYPTION_KEYS`)
              expect(yield* rowOf(file.id)).toEqual(before)
            }

            const rotated = yield* cli(["rotate-keys"], `${newKeys},${oldKeys}`)
            expect(rotated.code, rotated.stderr).toBe(0)
            expect(rotated.stdout).toContain(`Re-encrypted 1 credential(s) under key "new"`)
            expect(rotated.stdout).toContain(`Re-sealed ${total} file data key(s) under key "new"; 0 already under it`)
            const after = yield* rowOf(file.id)
            expect(after).toMatchObject({ storageKey: before.storageKey, contentKeyId: "new" })
            expect(after.contentKeyCiphertext).not.toBe(before.contentKeyCiphertext)
            expect((yield* storedBytes(after.storageKey))!.equals(storedBefore)).toBe(true)

            // The old key dropped: a server with the new key alone opens it.
            const renewed = yield* sibling({ ENCRYPTION_KEYS: newKeys })
            yield* onServer(renewed)(expectDownload(user.accessToken, file.id, content))
            const again = yield* cli(["rotate-keys"], newKeys)
            expect(again.stdout).toContain(`Re-sealed 0 file data key(s) under key "new"; ${total} already under it`)

            // This server, with the old key alone, cannot: the download is cut and the key named.
            const loggedBefore = logs.length
            expect((yield* expectCut(user.accessToken, file.id, content)).bytes.length).toBe(0)
            const line = logs.slice(loggedBefore).find((logged) =>
              String(logged.message).includes(`sealed under key "new", absent from ENCRYPTION_KEYS`)
            )
            expect(line).toMatchObject({ level: "ERROR", annotations: { keyId: "new" } })
            expect(JSON.stringify(logs)).not.toContain(newKey.toString("base64"))
            expect((yield* call("GET", "/health/live")).status).toBe(200)
          }))

        if (storage === "s3") {
          it.scoped("encrypt-files: a plaintext copy the store will not remove is counted, named, and the exit is 1", () =>
            Effect.gen(function*() {
              const { store, user } = yield* TheCast
              const off = yield* sibling({ FILES_ENCRYPTION: "off" })
              const content = textOf(100, `stuck-${Crypto.randomUUID()}`)
              const file = yield* onServer(off)(uploadOne(user.accessToken, "stuck.txt", content))
              const before = yield* rowOf(file.id)
              store.refuseDeletes(true)
              const run = yield* cli(["encrypt-files"], oldKeys).pipe(
                Effect.ensuring(Effect.sync(() => store.refuseDeletes(false)))
              )
              expect(run.code, run.stdout + run.stderr).toBe(1)
              expect(run.stdout).toContain("1 plaintext content(s) could not be removed")
              expect(run.stdout + run.stderr).toContain(before.storageKey)
              // The row moved onto the encrypted copy; the plaintext is still there, named.
              expect((yield* rowOf(file.id)).contentKeyId).toBe("old")
              expect(yield* storedBytes(before.storageKey)).toEqual(content)
              yield* expectDownload(user.accessToken, file.id, content)
            }))
        }
      }
    )
  }
}
