/**
 * Files' contents in an S3-compatible object store (`FILES_STORAGE=s3`), over real HTTP on both
 * dialects, against a loopback store that checks every request's SigV4 signature on its own:
 * uploads land in the bucket (nothing kept on disk), downloads stream them back, a refused upload
 * leaves nothing, deletion removes the object, analyses read the text from it, two instances share
 * one database and one bucket; a store that is briefly unwell is asked again, one that refuses fails
 * cleanly (500 with a `_tag`, no secret said) and makes the instance not ready.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { AppConfig, formatConfigError } from "../src/Config.js"
import { call, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { analysisSettled, upload, uploadOne } from "./fixtures/Content.js"
import { dialects, freshDirectory } from "./fixtures/Database.js"
import { capturedLogs, type LogLine } from "./fixtures/Logs.js"
import { type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { type FakeS3, fakeS3 } from "./fixtures/S3.js"
import { startTestServer, TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly store: FakeS3
  readonly logs: ReadonlyArray<LogLine>
  readonly user: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/FileStorageS3/Cast")<TheCast, Cast>() {}

const maxSize = 64 * 1024
const prefix = "webplus/"

const filesEnv = {
  FILES_MAX_SIZE: String(maxSize),
  S3_PREFIX: prefix,
  JOBS_POLL_INTERVAL: "50 millis",
  JOBS_MAX_ATTEMPTS: "1",
  CHAT_RETRY_ATTEMPTS: "0",
  MODEL_STATUS_POLL_INTERVAL: "0 seconds"
}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const store = yield* fakeS3()
    const logs = capturedLogs()
    const cast = Layer.scoped(
      TheCast,
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const openai = yield* fakeProvider("openai", [{ name: "gpt-s3" }])
        const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
        return { store, logs: logs.lines, user, openai, modelId: models["gpt-s3"]! }
      })
    )
    return cast.pipe(
      Layer.provideMerge(testServer({ dialect, env: store.env(filesEnv) }).pipe(Layer.provide(logs.layer)))
    )
  }))

/** The raw bytes of a download. */
const download = (auth: string, id: string) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    Effect.promise(async () => {
      const response = await fetch(`${baseUrl}/api/v1/files/${id}/content`, {
        headers: { authorization: `Bearer ${auth}`, "accept-encoding": "identity" }
      })
      return { status: response.status, bytes: new Uint8Array(await response.arrayBuffer()) }
    }))

/** Every file under a directory (the files directory keeps nothing but its scratch space with S3). */
const filesUnder = (root: string) =>
  Fs.existsSync(root)
    ? Fs.readdirSync(root, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile()).map((entry) =>
      Path.relative(root, Path.join(entry.parentPath, entry.name))
    )
    : []

const storedLocally = Effect.map(TestServer, ({ dataDir }) => filesUnder(Path.join(dataDir, "files")))

/** A 1×1 PNG followed by random bytes (so the type is accepted), `size` long. */
const pngLike = (size: number) => {
  const bytes = Crypto.randomBytes(size)
  Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "base64"
  ).copy(bytes)
  return new Uint8Array(bytes)
}

const probe = call("GET", "/health/ready")

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`files in an object store on ${dialect}`, (it) => {
    it.effect("an upload lands in the bucket under the prefix, signed, nothing kept on disk; the download is the same bytes", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const content = pngLike(40_000)
        const before = new Set(store.objects.keys())
        const view = yield* uploadOne(user.accessToken, "picture.png", content, "image/png")
        expect(view).toMatchObject({
          contentType: "image/png",
          sizeBytes: content.length,
          sha256: Crypto.createHash("sha256").update(content).digest("hex")
        })
        const added = [...store.objects.keys()].filter((key) => !before.has(key))
        expect(added).toHaveLength(1)
        expect(added[0]).toMatch(/^webplus\/[0-9a-f]{32}$/)
        // Encrypted (FILES_ENCRYPTION is on by default): a 9-byte header, the content, one 16-byte tag.
        expect(store.objects.get(added[0]!)!.length).toBe(content.length + 9 + 16)
        expect(store.objects.get(added[0]!)!.includes(Buffer.from(content).subarray(1_000, 1_064))).toBe(false)
        expect(yield* storedLocally).toEqual([])
        expect(store.requests.every((request) => request.signed)).toBe(true)

        const fetched = yield* download(user.accessToken, view.id)
        expect(fetched.status).toBe(200)
        expect(Buffer.compare(Buffer.from(fetched.bytes), Buffer.from(content))).toBe(0)
      }))

    it.effect("a file too large: 413, nothing in the store, nothing on disk", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const before = store.objects.size
        const puts = store.requests.filter((request) => request.method === "PUT").length
        const reply = yield* upload(user.accessToken, [{
          filename: "big.png",
          content: pngLike(maxSize + 1),
          type: "image/png"
        }])
        expect(expectStatus(reply, 413)).toMatchObject({ _tag: "PayloadTooLarge" })
        expect(store.objects.size).toBe(before)
        expect(store.requests.filter((request) => request.method === "PUT").length).toBe(puts)
        expect(yield* storedLocally).toEqual([])
      }))

    it.effect("deleting a file removes its object; its content is then 404", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const before = new Set(store.objects.keys())
        const view = yield* uploadOne(user.accessToken, "gone.txt", "Soon gone.\n")
        const key = [...store.objects.keys()].find((k) => !before.has(k))!
        expect(store.objects.has(key)).toBe(true)
        expect((yield* call("DELETE", `/api/v1/files/${view.id}`, { auth: user.accessToken })).status).toBe(204)
        expect(store.objects.has(key)).toBe(false)
        expect(store.requests.at(-1)).toMatchObject({ method: "DELETE", path: `/${store.bucket}/${key}`, status: 204 })
        expect((yield* download(user.accessToken, view.id)).status).toBe(404)
      }))

    it.effect("an analysis reads the file's text from the store; an object gone from it ends the analysis in error", () =>
      Effect.gen(function*() {
        const { modelId, openai, store, user } = yield* TheCast
        openai.faults.clear()
        openai.chat = { text: [`{"summary": "About storage.", "keyPoints": [], "topics": [], "language": "en"}`] }
        const content = "Objects live in buckets.\n"
        const file = yield* uploadOne(user.accessToken, "buckets.txt", content)
        const queued = expectStatus(
          yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
          202
        )
        expect(yield* analysisSettled(user.accessToken, file.id, queued.id, 200)).toMatchObject({
          status: "complete",
          extractedText: content
        })

        const before = new Set(store.objects.keys())
        const lost = yield* uploadOne(user.accessToken, "lost.txt", "Lost from the bucket.\n")
        for (const key of store.objects.keys()) if (!before.has(key)) store.objects.delete(key)
        const again = expectStatus(
          yield* call("POST", `/api/v1/files/${lost.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
          202
        )
        expect(yield* analysisSettled(user.accessToken, lost.id, again.id, 200)).toMatchObject({
          status: "error",
          error: "The file's text could not be read"
        })
      }))

    it.effect("a store briefly unwell (503 SlowDown, 500, a dropped connection) is asked again, and the file goes through", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const content = pngLike(20_000)
        const mark = store.requests.length
        store.failNext(2, 503)
        const view = yield* uploadOne(user.accessToken, "retried.png", content, "image/png")
        expect(store.requests.slice(mark).map((request) => request.status)).toEqual([503, 503, 200])

        const reading = store.requests.length
        store.dropNext(1)
        const fetched = yield* download(user.accessToken, view.id)
        expect(fetched.status).toBe(200)
        expect(Buffer.compare(Buffer.from(fetched.bytes), Buffer.from(content))).toBe(0)
        expect(store.requests.slice(reading).map((request) => request.status)).toEqual([0, 200])

        const deleting = store.requests.length
        store.failNext(1, 500)
        expect((yield* call("DELETE", `/api/v1/files/${view.id}`, { auth: user.accessToken })).status).toBe(204)
        expect(store.requests.slice(deleting).map((request) => request.status)).toEqual([500, 204])
      }))

    it.effect("a store unwell past the retries: the upload fails 500 with a _tag, nothing kept", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const before = store.objects.size
        store.failNext(10, 503)
        const reply = yield* upload(user.accessToken, [{ filename: "never.txt", content: "Never stored.\n" }])
        store.failNext(0)
        expect(expectStatus(reply, 500)).toMatchObject({ _tag: "InternalError" })
        expect(store.objects.size).toBe(before)
        expect(yield* storedLocally).toEqual([])
      }))

    it.effect("a store that refuses (AccessDenied): the upload fails 500 with a _tag, logged with the code; not ready meanwhile", () =>
      Effect.gen(function*() {
        const { logs, store, user } = yield* TheCast
        expect(expectStatus(yield* probe, 200).checks.storage).toMatchObject({ status: "ok" })
        store.refuse(true)
        const reply = yield* upload(user.accessToken, [{ filename: "refused.txt", content: "Refused.\n" }])
        const notReady = yield* probe
        store.refuse(false)
        expect(expectStatus(reply, 500)).toMatchObject({ _tag: "InternalError", message: expect.any(String) })
        expect(expectStatus(notReady, 503)).toMatchObject({
          _tag: "NotReady",
          message: "Not ready: storage failing",
          checks: { storage: { status: "failing", message: "object store answered 403" } }
        })
        const refusal = logs.find((line) => line.annotations.code === "AccessDenied")
        expect(refusal).toMatchObject({ level: "ERROR", annotations: { method: "PUT", status: 403 } })
        const said = JSON.stringify(reply.body) + JSON.stringify(notReady.body) + JSON.stringify(logs)
        expect(said).not.toContain(store.secretAccessKey)
        expect(said).not.toContain("Signature=")
        expect(yield* storedLocally).toEqual([])
        expect(expectStatus(yield* probe, 200).checks.storage).toMatchObject({ status: "ok" })
      }))

    it.effect("a store refusing the DELETE: the file is deleted all the same (204), its object left and logged", () =>
      Effect.gen(function*() {
        const { store, user } = yield* TheCast
        const before = new Set(store.objects.keys())
        const view = yield* uploadOne(user.accessToken, "stuck.txt", "Stays in the bucket.\n")
        const key = [...store.objects.keys()].find((k) => !before.has(k))!
        store.refuseDeletes(true)
        const deleted = yield* call("DELETE", `/api/v1/files/${view.id}`, { auth: user.accessToken }).pipe(
          Effect.ensuring(Effect.sync(() => store.refuseDeletes(false)))
        )
        expect(deleted.status).toBe(204)
        expect(store.requests.at(-1)).toMatchObject({ method: "DELETE", path: `/${store.bucket}/${key}`, status: 403 })
        expect(store.objects.has(key)).toBe(true)
        expect((yield* download(user.accessToken, view.id)).status).toBe(404)
      }))

    it.scoped("a wrong secret: uploads fail 500 with a _tag and readiness fails; the secret is never said", () =>
      Effect.gen(function*() {
        const { store } = yield* TheCast
        const wrongSecret = "wrong-secret-0xDEADBEEF"
        const logs = capturedLogs()
        const server = yield* startTestServer(
          testServer({ dialect, env: store.env({ ...filesEnv, S3_SECRET_ACCESS_KEY: wrongSecret }) }).pipe(
            Layer.provide(logs.layer)
          )
        )
        yield* Effect.gen(function*() {
          const someone = yield* signUp()
          const before = store.objects.size
          const reply = yield* upload(someone.accessToken, [{ filename: "denied.txt", content: "Denied.\n" }])
          expect(expectStatus(reply, 500)).toMatchObject({ _tag: "InternalError" })
          expect(store.requests.at(-1)).toMatchObject({ method: "PUT", status: 403, signed: false })
          expect(store.objects.size).toBe(before)
          const ready = yield* probe
          expect(expectStatus(ready, 503)).toMatchObject({ checks: { storage: { status: "failing" } } })
          expect(logs.lines.some((line) => line.annotations.code === "SignatureDoesNotMatch")).toBe(true)
          const said = JSON.stringify(reply.body) + JSON.stringify(ready.body) + JSON.stringify(logs.lines)
          expect(said).not.toContain(wrongSecret)
          expect(said).not.toContain("Signature=")
          expect(filesUnder(Path.join(server.dataDir, "files"))).toEqual([])
        }).pipe(Effect.provideService(TestServer, server))
      }))

    it.scoped("two instances on one database and one bucket, each with its own files directory, read each other's uploads", () =>
      Effect.gen(function*() {
        const { store } = yield* TheCast
        const a = yield* TestServer
        const elsewhere = yield* freshDirectory
        const b = yield* startTestServer(testServer({
          env: store.env({
            ...filesEnv,
            DATA_DIR: a.dataDir,
            FILES_DIR: elsewhere,
            ...(a.databaseUrl === undefined ? {} : { DATABASE_URL: a.databaseUrl })
          })
        }))
        const onB = Effect.provideService(TestServer, b)
        const owner = yield* signUp()
        const first = yield* uploadOne(owner.accessToken, "from-a.txt", "Written through A.\n")
        const second = yield* onB(uploadOne(owner.accessToken, "from-b.png", pngLike(5_000), "image/png"))
        const onA = yield* download(owner.accessToken, second.id)
        const fromB = yield* onB(download(owner.accessToken, first.id))
        expect(onA.status).toBe(200)
        expect(onA.bytes.length).toBe(5_000)
        expect(fromB.status).toBe(200)
        expect(Buffer.from(fromB.bytes).toString()).toBe("Written through A.\n")
        expect(filesUnder(elsewhere)).toEqual([])
        expect((yield* onB(call("DELETE", `/api/v1/files/${first.id}`, { auth: owner.accessToken }))).status).toBe(204)
        expect((yield* download(owner.accessToken, first.id)).status).toBe(404)
      }))
  })
}

describe("object store configuration", () => {
  const load = (env: Record<string, string>) =>
    Effect.gen(function*() {
      const config = yield* AppConfig
      return config.files
    }).pipe(
      Effect.provide(AppConfig.Default),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
      Effect.mapError(formatConfigError),
      Effect.either
    )

  it.effect("local by default: no S3 variable is read", () =>
    Effect.gen(function*() {
      const files = yield* load({ S3_ENDPOINT: "not a url" })
      expect(files._tag).toBe("Right")
      if (files._tag === "Right") expect(files.right.s3._tag).toBe("None")
    }))

  it.effect("with FILES_STORAGE=s3, each missing required variable is named; defaults for the rest", () =>
    Effect.gen(function*() {
      const full = {
        FILES_STORAGE: "s3",
        S3_ENDPOINT: "http://minio:9000/",
        S3_BUCKET: "files",
        S3_ACCESS_KEY_ID: "key",
        S3_SECRET_ACCESS_KEY: "secret-value"
      }
      for (const name of ["S3_ENDPOINT", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] as const) {
        const { [name]: _, ...rest } = full
        const outcome = yield* load(rest)
        expect(outcome._tag).toBe("Left")
        if (outcome._tag === "Left") expect(outcome.left).toContain(`${name} is required`)
      }
      const wrong = yield* load({ ...full, S3_ENDPOINT: "ftp://minio" })
      expect(wrong._tag === "Left" && wrong.left).toContain("S3_ENDPOINT")
      const loaded = yield* load(full)
      expect(loaded._tag).toBe("Right")
      if (loaded._tag === "Right" && loaded.right.s3._tag === "Some") {
        const s3 = loaded.right.s3.value
        expect(s3).toMatchObject({
          endpoint: "http://minio:9000",
          bucket: "files",
          region: "us-east-1",
          prefix: "",
          forcePathStyle: true
        })
        expect(String(s3.secretAccessKey)).not.toContain("secret-value")
      } else {
        expect.fail("expected the S3 settings")
      }
    }))
})
